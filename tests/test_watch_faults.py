"""Watch mode under stress: a burst of 1,000 file events, and a seeds folder that disappears and
comes back. The watcher keeps running and the index converges to the folder's final state."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from rag import faiss_folder as store
from rag.config import Settings
from rag.embedding import HashingEmbedder
from rag.errors import RagError
from rag.loaders import content_hash
from rag.pipeline import Rag

CONVERGE_SECONDS = 90.0


def watch_settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        seeds_dir=tmp_path / "seeds",
        index_dir=tmp_path / "index",
        embedding_model="hashing-256",
        generator="extractive",
        relevance_floor=0.05,
        watch_debounce_ms=200,
    )


def folder_state(seeds: Path) -> dict[str, str]:
    """What a complete build of the folder would record: relative path -> content hash."""
    if not seeds.is_dir():
        return {}
    return {
        p.relative_to(seeds).as_posix(): content_hash(p.read_bytes())
        for p in sorted(seeds.rglob("*.txt"))
        if p.is_file()
    }


def index_state(settings: Settings) -> dict[str, str] | None:
    try:
        manifest = store.read_manifest(settings.index_dir)
    except RagError:
        return None
    return None if manifest is None else {k: v.content_hash for k, v in manifest.documents.items()}


class Watcher:
    """Rag.watch in a thread with a stop Event; collects reports and errors."""

    def __init__(self, settings: Settings) -> None:
        self.rag = Rag(settings, embedder=HashingEmbedder(256))
        self.stop = threading.Event()
        self.reports = []
        self.errors: list[RagError] = []
        self.crash: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="watch-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.rag.watch(self.reports.append, on_error=self.errors.append, stop_event=self.stop)
        except BaseException as exc:  # noqa: BLE001 (the test asserts there is none)
            self.crash = exc

    def __enter__(self) -> "Watcher":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the watcher stops when told to"

    def converge(self, seeds: Path, timeout: float = CONVERGE_SECONDS) -> dict[str, str]:
        """Wait until the index holds exactly what the folder holds; return that state."""
        deadline = time.monotonic() + timeout
        want = folder_state(seeds)
        while time.monotonic() < deadline:
            assert self.crash is None, f"the watcher died: {self.crash!r}"
            assert self.thread.is_alive(), "the watcher stopped on its own"
            want = folder_state(seeds)
            if want and index_state(self.rag.settings) == want:
                return want
            time.sleep(0.2)
        pytest.fail(
            f"the index did not converge in {timeout:.0f}s: folder has {len(want)} files, index "
            f"{len(index_state(self.rag.settings) or {})}; errors: {self.errors[-3:]}"
        )


def test_a_burst_of_a_thousand_file_events_converges(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = watch_settings(tmp_path)
    seeds = settings.seeds_dir
    seeds.mkdir()
    (seeds / "anchor.txt").write_text("The anchor file names the Danube.\n", encoding="utf-8")
    with Watcher(settings) as watcher:
        watcher.converge(seeds)
        events = 0
        # 1,000 operations: create 300 files, rewrite each twice, delete 100 of them, in a rush.
        for i in range(300):
            (seeds / f"f{i:03d}.txt").write_text(f"File {i} first version about topic{i}.\n", encoding="utf-8")
            events += 1
        for round_ in (2, 3):
            for i in range(300):
                (seeds / f"f{i:03d}.txt").write_text(
                    f"File {i} version {round_} about topic{i} and river{i % 17}.\n", encoding="utf-8"
                )
                events += 1
        for i in range(0, 300, 3):
            (seeds / f"f{i:03d}.txt").unlink()
            events += 1
        assert events == 1000
        final = watcher.converge(seeds)
        assert len(final) == 201
        # Still watching: one more change after the storm is picked up.
        (seeds / "after.txt").write_text("Written after the burst about the Rhine.\n", encoding="utf-8")
        final = watcher.converge(seeds)
        assert "after.txt" in final
        hits = watcher.rag.retrieve("topic1 version 3", mode="bm25")
        assert hits and hits[0].chunk.source == "f001.txt"
        assert "version 3" in hits[0].chunk.text
        assert not [e for e in watcher.errors if "lock" in str(e).lower()]


def _recreate(seeds: Path, files: dict[str, str], *, pause: float) -> None:
    shutil.rmtree(seeds)
    time.sleep(pause)
    staging = seeds.with_name("staging")
    staging.mkdir()
    for rel, text in files.items():
        (staging / rel).write_text(text, encoding="utf-8")
    os.rename(staging, seeds)


@pytest.mark.parametrize("pause", [2.0, 0.0], ids=["gone-for-a-while", "swapped-at-once"])
def test_a_seeds_folder_removed_and_recreated_is_watched_again(tmp_path, monkeypatch, pause):
    monkeypatch.chdir(tmp_path)
    settings = watch_settings(tmp_path)
    seeds = settings.seeds_dir
    seeds.mkdir()
    (seeds / "old.txt").write_text("The old folder speaks of Hekla.\n", encoding="utf-8")
    with Watcher(settings) as watcher:
        watcher.converge(seeds)
        _recreate(seeds, {"new.txt": "The new folder speaks of Katla.\n"}, pause=pause)
        assert set(watcher.converge(seeds)) == {"new.txt"}
        # The recreated folder is itself watched: a later change in it is picked up too.
        time.sleep(0.5)
        (seeds / "later.txt").write_text("A later file about the Danube.\n", encoding="utf-8")
        assert set(watcher.converge(seeds)) == {"new.txt", "later.txt"}
        answer = watcher.rag.ask("Which file speaks of the Danube?")
        assert answer.citations and answer.citations[0].source == "later.txt"
