"""Incremental builds: exact counts of what is re-embedded, reuse of vectors, full rebuilds, the
plan, and builds through another store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from rag import faiss_folder
from rag.embedding import HashingEmbedder
from rag.errors import IndexMismatchError, IndexNotFoundError
from rag.indexer import Scan, ScannedFile, build_index, plan_build
from rag.vectorstore import BaseStore, check_manifest


def _chunk_counts(index_dir: Path) -> dict[str, int]:
    manifest = faiss_folder.read_manifest(index_dir)
    assert manifest is not None
    return {rel: len(entry.chunk_ids) for rel, entry in manifest.documents.items()}


def _vectors_by_id(index_dir: Path) -> dict[str, np.ndarray]:
    loaded = faiss_folder.load(index_dir)
    vectors = loaded.vectors()
    return {c.id: vectors[i] for i, c in enumerate(loaded.chunks)}


def _build_list(index_dir: Path) -> list[str]:
    return sorted(p.name for p in (index_dir / faiss_folder.BUILDS).iterdir())


def test_first_build_embeds_everything_once(make_settings, seeds_copy, counting_embedder) -> None:
    settings = make_settings()
    report = build_index(settings, embedder=counting_embedder)
    files = sorted(p.name for p in seeds_copy.iterdir())
    assert report.added == files
    assert report.changed == report.removed == report.unchanged == []
    assert report.wrote and report.full_rebuild_reason is None
    counts = _chunk_counts(settings.index_dir)
    assert report.chunks == report.embedded_chunks == sum(counts.values())
    assert counting_embedder.texts_embedded == report.chunks
    assert all(n > 0 for n in counts.values())


def test_no_change_rebuild_writes_nothing(make_settings, seeds_copy, counting_embedder) -> None:
    settings = make_settings()
    first = build_index(settings, embedder=counting_embedder)
    builds, current = _build_list(settings.index_dir), faiss_folder.current_build_name(settings.index_dir)
    embedded = counting_embedder.texts_embedded
    again = build_index(settings, embedder=counting_embedder)
    assert again.wrote is False
    assert again.added == again.changed == again.removed == []
    assert again.unchanged == first.added
    assert again.embedded_chunks == 0 and again.chunks == first.chunks
    assert counting_embedder.texts_embedded == embedded
    assert _build_list(settings.index_dir) == builds
    assert faiss_folder.current_build_name(settings.index_dir) == current


def test_touch_without_content_change_is_unchanged(make_settings, seeds_copy, counting_embedder) -> None:
    settings = make_settings()
    build_index(settings, embedder=counting_embedder)
    victim = next(iter(sorted(seeds_copy.iterdir())))
    victim.write_bytes(victim.read_bytes())  # new mtime, same bytes
    report = build_index(settings, embedder=counting_embedder)
    assert report.wrote is False and report.embedded_chunks == 0


def test_change_one_file_embeds_only_its_chunks(make_settings, seeds_copy, counting_embedder) -> None:
    settings = make_settings()
    build_index(settings, embedder=counting_embedder)
    before_vectors = _vectors_by_id(settings.index_dir)
    before_counts = _chunk_counts(settings.index_dir)
    victim = "002_9ea828dbd9940559.txt"
    with (seeds_copy / victim).open("a", encoding="utf-8") as fh:
        fh.write("\nA new closing paragraph about something else entirely. It has two sentences.\n")
    counting_embedder.calls.clear()

    report = build_index(settings, embedder=counting_embedder)
    after_counts = _chunk_counts(settings.index_dir)
    assert report.changed == [victim]
    assert report.added == report.removed == []
    assert sorted(report.unchanged) == sorted(set(before_counts) - {victim})
    assert report.embedded_chunks == after_counts[victim]
    assert counting_embedder.texts_embedded == after_counts[victim]
    assert report.chunks == sum(after_counts.values())
    assert report.wrote and report.full_rebuild_reason is None

    after_vectors = _vectors_by_id(settings.index_dir)
    loaded = faiss_folder.load(settings.index_dir)
    for chunk in loaded.chunks:
        if chunk.source == victim:
            assert chunk.id not in before_vectors
        else:  # unchanged chunks keep their ids and exactly their old vectors
            np.testing.assert_array_equal(after_vectors[chunk.id], before_vectors[chunk.id])
    assert any(victim == t.source for t in loaded.chunks)
    assert any("A new closing paragraph" in t for batch in counting_embedder.calls for t in batch)


def test_add_and_delete_files(make_settings, seeds_copy, counting_embedder) -> None:
    settings = make_settings()
    build_index(settings, embedder=counting_embedder)
    counts = _chunk_counts(settings.index_dir)

    (seeds_copy / "extra").mkdir()
    shutil.copy(seeds_copy / "000_2cc7a2ca98addbf3.txt", seeds_copy / "extra" / "copy.txt")
    counting_embedder.calls.clear()
    added = build_index(settings, embedder=counting_embedder)
    assert added.added == ["extra/copy.txt"]
    assert added.embedded_chunks == counting_embedder.texts_embedded == counts["000_2cc7a2ca98addbf3.txt"]
    assert added.chunks == sum(counts.values()) + counts["000_2cc7a2ca98addbf3.txt"]

    victim = "003_a1ee2ab32131de33.txt"
    (seeds_copy / victim).unlink()
    counting_embedder.calls.clear()
    removed = build_index(settings, embedder=counting_embedder)
    assert removed.removed == [victim]
    assert removed.embedded_chunks == counting_embedder.texts_embedded == 0
    assert removed.chunks == added.chunks - counts[victim]
    loaded = faiss_folder.load(settings.index_dir)
    assert victim not in loaded.manifest.documents
    assert all(c.source != victim for c in loaded.chunks)
    assert len(loaded.chunks) == loaded.faiss_index.ntotal == removed.chunks


def test_add_change_delete_at_once(make_settings, seeds_copy, counting_embedder) -> None:
    settings = make_settings()
    build_index(settings, embedder=counting_embedder)
    (seeds_copy / "new.md").write_text("# New\n\nA brand new note. It is short.\n", encoding="utf-8")
    (seeds_copy / "001_508b4d799a7d30db.txt").write_text("Completely rewritten. Two sentences.\n", encoding="utf-8")
    (seeds_copy / "004_6cce297e4ca185f7.txt").unlink()
    counting_embedder.calls.clear()
    report = build_index(settings, embedder=counting_embedder)
    counts = _chunk_counts(settings.index_dir)
    assert report.added == ["new.md"]
    assert report.changed == ["001_508b4d799a7d30db.txt"]
    assert report.removed == ["004_6cce297e4ca185f7.txt"]
    assert report.embedded_chunks == counts["new.md"] + counts["001_508b4d799a7d30db.txt"] == 2
    assert counting_embedder.texts_embedded == 2


def test_incremental_equals_fresh_build(make_settings, seeds_copy, tmp_path: Path) -> None:
    embedder = HashingEmbedder(256)
    settings = make_settings()
    build_index(settings, embedder=embedder)
    (seeds_copy / "000_2cc7a2ca98addbf3.txt").write_text("Replaced text. Nothing else.\n", encoding="utf-8")
    (seeds_copy / "003_a1ee2ab32131de33.txt").unlink()
    (seeds_copy / "z.txt").write_text("A last file. With words.\n", encoding="utf-8")
    build_index(settings, embedder=embedder)

    fresh = make_settings(index_dir=tmp_path / "fresh-index")
    build_index(fresh, embedder=embedder)
    a, b = faiss_folder.load(settings.index_dir), faiss_folder.load(fresh.index_dir)
    assert a.manifest.documents == b.manifest.documents
    assert sorted(c.model_dump_json() for c in a.chunks) == sorted(c.model_dump_json() for c in b.chunks)
    va, vb = _vectors_by_id(settings.index_dir), _vectors_by_id(fresh.index_dir)
    assert va.keys() == vb.keys()
    for cid in va:
        np.testing.assert_allclose(va[cid], vb[cid], atol=1e-6)


def test_model_change_triggers_full_rebuild(make_settings, seeds_copy) -> None:
    settings = make_settings(embedding_model="hashing-256")
    first = build_index(settings)
    other = make_settings(embedding_model="hashing-128")
    warnings: list[str] = []
    report = build_index(other, warn=warnings.append)
    assert report.wrote
    assert report.full_rebuild_reason is not None
    assert "embedding model" in report.full_rebuild_reason
    assert "hashing-256" in report.full_rebuild_reason and "hashing-128" in report.full_rebuild_reason
    assert report.embedded_chunks == report.chunks == first.chunks
    assert sorted(report.added) == sorted(first.added)
    assert any("full rebuild" in w for w in warnings)
    loaded = faiss_folder.load(settings.index_dir)
    assert loaded.manifest.embedding_model == "hashing-128"
    assert loaded.vectors().shape == (first.chunks, 128)


@pytest.mark.parametrize(("tokens", "overlap"), [(120, 30), (180, 10)])
def test_chunking_change_triggers_full_rebuild(make_settings, seeds_copy, counting_embedder, tokens, overlap) -> None:
    build_index(make_settings(), embedder=counting_embedder)
    counting_embedder.calls.clear()
    report = build_index(make_settings(chunk_tokens=tokens, chunk_overlap=overlap), embedder=counting_embedder)
    assert report.full_rebuild_reason is not None and "chunking" in report.full_rebuild_reason
    assert f"{tokens}/{overlap}" in report.full_rebuild_reason
    assert report.embedded_chunks == report.chunks == counting_embedder.texts_embedded
    manifest = faiss_folder.read_manifest(make_settings().index_dir)
    assert manifest is not None and (manifest.chunk_tokens, manifest.chunk_overlap) == (tokens, overlap)


def test_a_new_chunking_version_triggers_full_rebuild(make_settings, seeds_copy, counting_embedder, monkeypatch) -> None:
    from rag import indexer

    first = build_index(make_settings(), embedder=counting_embedder)
    assert build_index(make_settings(), embedder=counting_embedder).full_rebuild_reason is None
    counting_embedder.calls.clear()
    monkeypatch.setattr(indexer, "CHUNKING_VERSION", indexer.CHUNKING_VERSION + 1)
    report = build_index(make_settings(), embedder=counting_embedder)
    new = indexer.CHUNKING_VERSION
    assert report.full_rebuild_reason == f"the chunking changed (version {new - 1} -> {new})"
    assert report.embedded_chunks == report.chunks == first.chunks == counting_embedder.texts_embedded
    manifest = faiss_folder.read_manifest(make_settings().index_dir)
    assert manifest is not None and manifest.library_versions[indexer.CHUNKING_KEY] == str(new)


def test_force_re_embeds_everything(make_settings, seeds_copy, counting_embedder) -> None:
    first = build_index(make_settings(), embedder=counting_embedder)
    report = build_index(make_settings(), embedder=counting_embedder, force=True)
    assert report.wrote and "--force" in (report.full_rebuild_reason or "")
    assert report.embedded_chunks == report.chunks == first.chunks


def test_mismatched_settings_on_load(make_settings, seeds_copy) -> None:
    settings = make_settings(embedding_model="hashing-256")
    build_index(settings)
    manifest = faiss_folder.load(settings.index_dir).manifest
    with pytest.raises(IndexMismatchError) as info:
        check_manifest(manifest, embedding_model="hashing-128", chunk_tokens=180, chunk_overlap=30)
    assert "Run `rag index`" in str(info.value)
    with pytest.raises(IndexMismatchError, match="RAG_CHUNK_OVERLAP"):
        check_manifest(manifest, embedding_model="hashing-256", chunk_tokens=180, chunk_overlap=20)


def test_file_turning_binary_is_removed(make_settings, seeds_copy, counting_embedder) -> None:
    settings = make_settings()
    build_index(settings, embedder=counting_embedder)
    victim = "001_508b4d799a7d30db.txt"
    (seeds_copy / victim).write_bytes(b"\x00\x01\x02" * 100)
    warnings: list[str] = []
    report = build_index(settings, embedder=counting_embedder, warn=warnings.append)
    assert victim in report.removed
    assert victim not in faiss_folder.load(settings.index_dir).manifest.documents
    assert any(victim in w and "binary" in w for w in warnings)


def test_empty_seeds_folder_gives_empty_index(make_settings, seeds_copy, counting_embedder) -> None:
    settings = make_settings()
    build_index(settings, embedder=counting_embedder)
    for path in seeds_copy.iterdir():
        path.unlink()
    report = build_index(settings, embedder=counting_embedder)
    assert report.wrote and report.chunks == 0 and len(report.removed) == 5
    loaded = faiss_folder.load(settings.index_dir)
    assert loaded.chunks == [] and loaded.manifest.documents == {}


def test_rows_follow_the_manifest_after_incremental_builds(make_settings, seeds_copy) -> None:
    """A build's rows are in document order however it was reached, so ties rank alike."""
    settings = make_settings()
    build_index(settings)
    (seeds_copy / "000_2cc7a2ca98addbf3.txt").write_text("Replaced text. Nothing else.\n", encoding="utf-8")
    (seeds_copy / "a_first.txt").write_text("Sorted first. New file.\n", encoding="utf-8")
    build_index(settings)
    loaded = faiss_folder.load(settings.index_dir)
    assert [c.id for c in loaded.chunks] == [
        cid for entry in loaded.manifest.documents.values() for cid in entry.chunk_ids
    ]


# -- the plan ------------------------------------------------------------------------------------
def _scan(files: dict[str, str], unreadable: tuple[str, ...] = ()) -> Scan:
    from rag.loaders import SourceFile, content_hash

    return Scan(
        files={rel: ScannedFile(source=SourceFile(rel, Path(rel)), data=t.encode(), digest=content_hash(t.encode()))
               for rel, t in files.items()},
        unreadable={rel: f"{rel}: permission denied" for rel in unreadable},
    )


def _manifest(files: dict[str, str]):
    from rag.loaders import content_hash
    from rag.types import DocumentEntry, Manifest

    return Manifest(
        schema_version=faiss_folder.SCHEMA_VERSION, embedding_model="hashing-256", dimension=256,
        max_model_tokens=256, chunk_tokens=180, chunk_overlap=30, tokenizer="cl100k_base",
        documents={rel: DocumentEntry(path=rel, content_hash=content_hash(t.encode()), chunk_ids=[f"{rel}#0"],
                                      kind="txt") for rel, t in files.items()},
        chunk_count=len(files), library_versions={}, built_at="2024-01-01T00:00:00Z", build_seconds=1.0, files={},
    )


def test_the_plan_sorts_every_file_into_one_outcome_and_is_frozen() -> None:
    previous = _manifest({"same.txt": "a", "edited.txt": "b", "gone.txt": "c", "locked.txt": "d"})
    scan = _scan({"same.txt": "a", "edited.txt": "B", "new.txt": "e"}, unreadable=("locked.txt", "locked-new.txt"))
    plan = plan_build(scan, previous, None)
    assert (plan.added, plan.changed, plan.removed, plan.unchanged) == (
        ("new.txt",), ("edited.txt",), ("gone.txt",), ("same.txt",))
    assert plan.kept_unreadable == ("locked.txt",) and plan.discarded == ()
    assert plan.reuse and plan.has_work
    assert plan.to_delete == ["edited.txt", "gone.txt"] and plan.to_embed == ["edited.txt", "new.txt"]
    with pytest.raises(ValidationError):
        plan.added = ()  # type: ignore[misc]

    nothing = plan_build(_scan({"same.txt": "a"}), _manifest({"same.txt": "a"}), None)
    assert not nothing.has_work and nothing.unchanged == ("same.txt",)


def test_a_full_rebuild_plan_discards_the_whole_previous_build() -> None:
    previous = _manifest({"same.txt": "a", "gone.txt": "c"})
    plan = plan_build(_scan({"same.txt": "a", "new.txt": "e"}), previous, "--force was given")
    assert plan.added == ("new.txt", "same.txt") and plan.changed == plan.removed == plan.unchanged == ()
    assert plan.discarded == ("gone.txt", "same.txt") and plan.to_delete == ["gone.txt", "same.txt"]
    assert not plan.reuse and plan.full_rebuild_reason == "--force was given"
    first = plan_build(_scan({}), None, None)
    assert first.has_work  # the first build writes even an empty index


# -- the indexer writes through the store protocol only ---------------------------------------------
class RecordingStore(BaseStore):
    """A WritableStore kept in a dict, recording what the indexer asks of it; it cannot be searched,
    so a build that read from the store other than through manifest() would fail here. Only what
    every store must implement is here: the rest (close, sweep, schema_version) is BaseStore's."""

    kind = "memory"

    def __init__(self, place: dict) -> None:
        self.place = place
        self.pending = dict(place.get("chunks", {}))

    def manifest(self):
        if "manifest" not in self.place:
            raise IndexNotFoundError("nothing committed")
        return self.place["manifest"]

    def delete_documents(self, sources) -> int:
        sources = sorted(set(sources))
        self.place["calls"].append(("delete", sources))
        gone = [cid for cid, (chunk, _) in self.pending.items() if chunk.source in sources]
        for cid in gone:
            del self.pending[cid]
        return len(gone)

    def add(self, chunks, vectors) -> None:
        self.place["calls"].append(("add", len(chunks)))
        assert len(vectors) == len(chunks)
        self.pending.update({c.id: (c, v) for c, v in zip(chunks, vectors)})

    def commit(self, manifest_fields: dict):
        from datetime import datetime, timezone

        from rag.types import Manifest

        fields = dict(manifest_fields)
        seconds = fields.pop("seconds")
        listed = {cid for e in fields["documents"].values() for cid in e.chunk_ids}
        assert listed == set(self.pending)
        manifest = Manifest(schema_version=faiss_folder.SCHEMA_VERSION, chunk_count=len(self.pending),
                            built_at=datetime.now(timezone.utc), build_seconds=seconds, files={}, **fields)
        self.place.update(manifest=manifest, chunks=dict(self.pending))
        self.place["calls"].append(("commit", len(self.pending)))
        return manifest


def test_another_store_gets_the_same_incremental_builds(make_settings, seeds_copy, monkeypatch) -> None:
    place: dict = {"calls": []}
    monkeypatch.setattr("rag.indexer.open_store", lambda settings, writable=False: RecordingStore(place))
    settings = make_settings()
    first = build_index(settings)
    assert place["calls"] == [("delete", []), ("add", first.chunks), ("commit", first.chunks)]
    assert not (settings.index_dir / faiss_folder.BUILDS).exists()  # nothing went to the FAISS folders

    place["calls"].clear()
    changed, gone = "001_508b4d799a7d30db.txt", "004_6cce297e4ca185f7.txt"
    (seeds_copy / changed).write_text("Completely rewritten. Two sentences.\n", encoding="utf-8")
    (seeds_copy / gone).unlink()
    report = build_index(settings)
    assert (report.changed, report.removed) == ([changed], [gone])
    assert place["calls"] == [("delete", [changed, gone]), ("add", 1), ("commit", report.chunks)]
    assert set(place["manifest"].documents) == {p.name for p in seeds_copy.iterdir()}

    place["calls"].clear()
    assert build_index(settings).wrote is False and place["calls"] == []


# -- approximate FAISS indexes through the indexer ---------------------------------------------------
def test_a_corpus_over_the_flat_limit_gets_an_hnsw_index_that_answers(make_settings, seeds_copy) -> None:
    from rag.embedding import HashingEmbedder
    from rag.faiss_store import FaissStore
    from rag.retrieval import Retriever

    settings = make_settings(faiss_flat_max=5, chunk_tokens=24, chunk_overlap=0)
    report = build_index(settings)
    assert report.chunks > 5
    loaded = faiss_folder.load(settings.index_dir)
    manifest = loaded.manifest
    assert manifest.index_kind == "hnsw"
    assert set(manifest.index_parameters) == {"M", "efConstruction", "efSearch"}
    assert manifest.index_recall is not None and manifest.index_recall >= settings.faiss_min_recall
    retriever = Retriever(FaissStore.of(loaded), HashingEmbedder(256))
    target = loaded.chunks[len(loaded.chunks) // 2]
    assert retriever.search(target.text, top_k=3, mode="dense")[0].chunk.source == target.source

    (seeds_copy / "extra.txt").write_text("A new file about lighthouses and their keepers.\n", encoding="utf-8")
    again = build_index(settings)
    assert again.embedded_chunks == 1
    assert faiss_folder.read_manifest(settings.index_dir).index_kind == "hnsw"
