"""`Rag.ask` end to end on the shipped seeds with the real packaged embedding model and the
settings as shipped: the relevance floor and the citation thresholds are tuned for this model,
so this is where they are proven (the hashing fake elsewhere cannot)."""

from __future__ import annotations

import pytest

from rag.pipeline import Rag

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rag(tmp_path_factory, real_embedder):
    import shutil

    from conftest import SEEDS_DIR
    from rag.config import Settings

    root = tmp_path_factory.mktemp("seeds-real")
    shutil.copytree(SEEDS_DIR, root / "seeds")
    settings = Settings(_env_file=None, seeds_dir=root / "seeds", index_dir=root / "index", generator="extractive")
    rag = Rag(settings, embedder=real_embedder)
    rag.index()
    return rag


def test_an_answerable_question_is_answered_with_verified_citations_into_the_right_file(rag):
    answer = rag.ask("Which Qwen3 variation is described as coding-proficient?")
    assert not answer.refused
    assert "Qwen3-Coder" in answer.text
    assert answer.citations and all(c.verified for c in answer.citations)
    assert {c.source for c in answer.citations} == {"004_6cce297e4ca185f7.txt"}
    lines = rag.document_lines("004_6cce297e4ca185f7.txt")
    cited = answer.citations[0]
    assert " ".join(cited.quote.split()) in " ".join(lines[cited.start_line - 1 : cited.end_line])


def test_a_list_question_names_items_from_the_text(rag):
    answer = rag.ask("Which Chinese companies are named as carving their own path in defiance of U.S. restrictions?")
    assert not answer.refused
    assert all(name in answer.text for name in ("Alibaba", "Tencent", "Baidu"))
    assert all(c.verified for c in answer.citations)


def test_an_off_topic_question_is_refused_by_the_shipped_relevance_floor(rag):
    answer = rag.ask("What is the boiling point of liquid nitrogen at sea level?")
    assert answer.refused and answer.citations == []
    assert max(h.dense_score for h in answer.passages) < rag.settings.relevance_floor


def test_a_follow_up_is_answered_from_the_same_documents(rag):
    first = rag.ask("Which OpenAI model does DeepSeek rival?")
    assert not first.refused and "o1" in first.text
    follow = rag.ask("And is it more efficient?", history=[(first.question, first.text)])
    assert follow.standalone_question and "DeepSeek" in follow.standalone_question
