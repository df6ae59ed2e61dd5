"""`rag eval qa` and `rag eval beir` end to end on tiny data, with the hashing embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.errors import ConfigError

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


def test_eval_qa_scores_answer_spans_and_questions_with_two_gold_documents(env: Path):
    questions = env / "multi.jsonl"
    records = [
        {"id": "m1", "question": "What is the starter of baker Marta Quill called, and who became world "
         "chess champion in 2013?", "answerable": True, "gold_doc_ids": ["bakery", "chess"], "answers": ["Bubbles"]},
        {"id": "m2", "question": "Which volcano's lava reached the ocean in 2018, and whom did Carlsen defend "
         "the chess title against in 2018?", "answerable": True, "gold_doc_ids": ["volcano", "chess"],
         "answers": ["Fabiano Caruana"]},
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    common = ["eval", "qa", str(questions), "--generator", "extractive", "--json",
              "--seeds", str(env / "seeds"), "--index", str(env / "index")]
    data = _run(common + ["--top-k", "3"])
    for q in data["questions"]:
        # Three passages of three files: both gold documents always retrieved.
        assert q["all_gold_retrieved"] == 1.0
        assert q["all_gold_cited"] == (1.0 if set(q["gold"]) <= set(q["cited"]) else 0.0)
        answer = q["answer"].lower()
        assert q["answer_contained"] == (1.0 if any(a.lower() in answer for a in records[int(q["id"][1]) - 1]["answers"]) else 0.0)
    overall = data["overall"]
    assert overall["all_gold_retrieved"] == 1.0
    assert overall["all_gold_cited"] == sum(q["all_gold_cited"] for q in data["questions"]) / 2
    assert overall["answer_contained"] == sum(q["answer_contained"] for q in data["questions"]) / 2
    # One passage cannot hold two gold documents.
    assert _run(common + ["--top-k", "1"])["overall"]["all_gold_retrieved"] == 0.0


def _titled_set(env: Path) -> Path:
    """Four titles in file order (Bakery, Chess, Volcano, Sourdough), one answerable and one
    unanswerable question each."""
    gold = {"Bakery": "bakery", "Chess": "chess", "Volcano": "volcano", "Sourdough": "bakery"}
    records = []
    for title, doc in gold.items():
        records.append({"id": f"{title}-a", "question": f"What does the {doc} text say about {title.lower()}?",
                        "answerable": True, "gold_doc_ids": [doc], "answers": [title], "title": title})
        records.append({"id": f"{title}-u", "question": f"What is the price of {title.lower()} tickets in Oslo?",
                        "answerable": False, "gold_doc_ids": [doc], "answers": [], "title": title})
    path = env / "titled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_eval_qa_titles_and_seeded_sample(env: Path):
    questions = _titled_set(env)
    common = ["eval", "qa", str(questions), "--generator", "extractive", "--json",
              "--seeds", str(env / "seeds"), "--index", str(env / "index")]
    report = _run(common + ["--titles", "report"])
    assert [q["id"] for q in report["questions"]] == ["Volcano-a", "Volcano-u", "Sourdough-a", "Sourdough-u"]
    assert report["selection"] == {"titles": "report"}
    tune = _run(common + ["--titles", "tune"])
    assert [q["id"] for q in tune["questions"]] == ["Bakery-a", "Bakery-u", "Chess-a", "Chess-u"]

    first = _run(common + ["--sample", "2", "--seed", "5"])
    ids = [q["id"] for q in first["questions"]]
    assert ids == [q["id"] for q in _run(common + ["--sample", "2", "--seed", "5"])["questions"]]
    assert sum(q["unanswerable"] for q in first["questions"]) == 2 and len(ids) == 4
    assert first["overall"]["answerable"] == 2 and first["selection"] == {"sample": 2, "seed": 5}
    # Some seed draws another pair of questions (4 questions of each kind make 6 pairs).
    assert any([q["id"] for q in _run(common + ["--sample", "2", "--seed", str(s)])["questions"]] != ids
               for s in range(6, 9))
    # All narrowings together: the report half, a sample of 1 + 1, then its first answerable only.
    narrowed = _run(common + ["--titles", "report", "--sample", "1", "--seed", "5", "--unanswerable", "0"])
    assert len(narrowed["questions"]) == 1 and narrowed["questions"][0]["id"] in ("Volcano-a", "Sourdough-a")


def test_eval_qa_titles_on_a_set_without_titles_says_so(env: Path):
    questions = env / "qa.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", "qa", str(questions), "--generator", "extractive", "--titles",
                                      "report", "--seeds", str(env / "seeds"), "--index", str(env / "index")])
    assert isinstance(result.exception, ConfigError) and "title" in str(result.exception)
