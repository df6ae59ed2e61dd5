"""`rag eval qa` and `rag eval beir` end to end on tiny data, with the hashing embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli import app

DOCS = {
    "bakery.txt": "The Rosewood bakery bakes sourdough bread every morning. "
    "Its baker, Marta Quill, keeps a sourdough starter named Bubbles.\n",
    "chess.txt": "Magnus Carlsen became world chess champion in 2013. "
    "He defended the title against Fabiano Caruana in 2018.\n",
    "volcano.txt": "Kilauea is an active volcano on the island of Hawaii. "
    "Its lava flows reached the ocean in 2018.\n",
}
QUESTIONS = [
    {"id": "q1", "question": "What is the sourdough starter of baker Marta Quill called?",
     "sources": ["bakery.txt"], "keywords": [["Bubbles"], ["sourdough", "bread"], ["yeast"]]},
    {"id": "q2", "question": "When did Magnus Carlsen become world chess champion?",
     "answerable": True, "gold_doc_ids": ["chess"], "answers": ["Magnus Carlsen became world chess champion in 2013."]},
    {"id": "u1", "question": "What is the recipe for Tibetan yak butter tea?", "unanswerable": True},
]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("RAG_EMBEDDING_MODEL", "hashing-256")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for name, text in DOCS.items():
        (seeds / name).write_text(text, encoding="utf-8")
    return tmp_path


def _run(args: list[str]) -> dict:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_eval_qa_json_shape_and_values(env: Path):
    questions = env / "qa.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    data = _run(["eval", "qa", str(questions), "--generator", "extractive", "--top-k", "3", "--json",
                 "--seeds", str(env / "seeds"), "--index", str(env / "index")])

    overall = data["overall"]
    for name in ("hit@1", "hit@3", "hit@5", "mrr", "citation_precision", "citation_recall",
                 "keyword_recall", "refusal_accuracy", "false_refusal_rate"):
        assert name in overall
    assert [q["id"] for q in data["questions"]] == ["q1", "q2", "u1"]
    q1, q2, u1 = data["questions"]
    # Each answerable question's own file is retrieved first and is the only one cited.
    assert q1["retrieved"][0] == "bakery.txt" and q2["retrieved"][0] == "chess.txt"
    assert q1["cited"] == ["bakery.txt"] and q2["cited"] == ["chess.txt"]
    # The extractive answer quotes the starter sentence: "Bubbles" and "sourdough", not "yeast".
    assert "Bubbles" in q1["answer"] and q1["keyword_recall"] == pytest.approx(2 / 3)
    assert q2["keyword_recall"] is None and q2["rouge_l"] == 1.0
    assert u1["refused"] and u1["hit@1"] is None
    assert overall["hit@1"] == 1.0 and overall["hit@3"] == 1.0 and overall["mrr"] == 1.0
    assert overall["citation_precision"] == 1.0 and overall["citation_recall"] == 1.0
    assert overall["keyword_recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert overall["refusal_accuracy"] == 1.0 and overall["false_refusal_rate"] == 0.0
    assert overall["rouge_l"] == 1.0
    assert (overall["questions"], overall["answerable"], overall["unanswerable"]) == (3, 2, 1)
    assert overall["latency_p50_s"] > 0


def test_eval_qa_builds_a_corpus_folder_from_corpus_jsonl(env: Path):
    corpus = env / "bench" / "corpus.jsonl"
    corpus.parent.mkdir()
    corpus.write_text(
        "".join(json.dumps({"_id": n.removesuffix(".txt"), "title": "", "text": t}) + "\n" for n, t in DOCS.items()),
        encoding="utf-8",
    )
    questions = env / "qa.jsonl"
    questions.write_text(json.dumps(QUESTIONS[1]) + "\n" + json.dumps(QUESTIONS[2]) + "\n", encoding="utf-8")
    data = _run(["eval", "qa", str(questions), "--generator", "extractive", "--json",
                 "--corpus", str(corpus), "--seeds", str(env / "corpus-files"), "--index", str(env / "idx")])
    assert sorted(p.name for p in (env / "corpus-files").iterdir()) == sorted(DOCS)
    assert data["questions"][0]["gold"] == ["chess.txt"]
    assert data["overall"]["hit@1"] == 1.0 and data["overall"]["refusal_accuracy"] == 1.0


def test_eval_beir_on_a_tiny_folder(env: Path):
    folder = env / "tiny"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": n.removesuffix(".txt"), "title": "", "text": t}) + "\n" for n, t in DOCS.items()),
        encoding="utf-8",
    )
    (folder / "queries.jsonl").write_text(
        json.dumps({"_id": "1", "text": "Kilauea lava flows Hawaii"}) + "\n"
        + json.dumps({"_id": "2", "text": "world chess champion Carlsen"}) + "\n",
        encoding="utf-8",
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\tvolcano\t1\n2\tchess\t1\n")
    data = _run(["eval", "beir", str(folder), "--mode", "hybrid", "--json", "--cache", str(env / "cache")])
    assert data["queries"] == 2 and data["documents"] == 3
    assert data["scores"] == {"ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}
    assert Path(data["seeds_dir"]).is_relative_to(env / "cache")
    # A second run reuses the index built by the first.
    assert _run(["eval", "beir", str(folder), "--json", "--cache", str(env / "cache")])["indexing"]["reused"]
