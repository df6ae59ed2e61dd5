"""The prompt: numbered passages with file and lines, trimmed to the context window."""

from __future__ import annotations

import pytest

from rag.chunking import count_tokens, line_span
from rag.citations import build_citations
from rag.corpus_cache import corpus_user_message
from rag.judge import JUDGE_INSTRUCTION, judge_request
from rag.prompting import (
    ANSWER_INSTRUCTION,
    REFUSAL,
    SYSTEM_PROMPT,
    TEMPLATE_OVERHEAD,
    build_request,
    is_refusal,
    user_message,
)
from rag.types import Chunk, Highlight, Hit

QUESTION = "What happened to the glaciers?"


def make_hit(source: str, file_text: str, rank: int, start: int = 0, end: int | None = None) -> Hit:
    end = len(file_text) if end is None else end
    chunk = Chunk(
        id=f"{source}#{rank}",
        source=source,
        ordinal=rank - 1,
        text=file_text[start:end],
        start_char=start,
        end_char=end,
        start_line=file_text.count("\n", 0, start) + 1,
        end_line=file_text.count("\n", 0, end - 1) + 1,
        tokens=count_tokens(file_text[start:end]),
    )
    return Hit(chunk=chunk, score=1.0 / rank, dense_score=0.9 - rank / 10, rank=rank)


def passage_file(n: int, lines: int = 12) -> str:
    return "\n".join(f"Glacier {n} line {i}: the ice retreated {i * 3} metres that year." for i in range(1, lines + 1))


def budget_for(question: str, hits: list[Hit], max_tokens: int) -> int:
    """The context window in which exactly these passages fit."""
    return count_tokens(user_message(question, hits)) + max_tokens + TEMPLATE_OVERHEAD + count_tokens(SYSTEM_PROMPT)


def test_passages_are_numbered_in_rank_order_with_file_and_lines():
    files = {f"g{n}.txt": passage_file(n) for n in (1, 2)}
    hits = [make_hit("g1.txt", files["g1.txt"], 1), make_hit("g2.txt", files["g2.txt"], 2, start=files["g2.txt"].index("Glacier 2 line 5"))]
    request = build_request(QUESTION, hits, context_tokens=8192, max_tokens=100, temperature=0.0)
    system, user = request.messages
    assert system.role == "system" and REFUSAL in system.content
    assert user.role == "user"
    first = user.content.index("[1] (g1.txt, lines 1-12)")
    second = user.content.index("[2] (g2.txt, lines 5-12)")
    assert first < second
    assert hits[0].chunk.text in user.content and hits[1].chunk.text in user.content
    # the question comes last, after every passage, so the model reads it right before answering
    assert user.content.rindex(f"Question: {QUESTION}") > second
    assert request.passages == hits
    assert (request.max_tokens, request.temperature, request.question) == (100, 0.0, QUESTION)


def test_a_one_line_passage_says_line_not_lines():
    text = "first\nsecond line of the file\nthird"
    hit = make_hit("f.txt", text, 1, start=6, end=text.index("\nthird"))
    user = build_request(QUESTION, [hit], context_tokens=8192, max_tokens=10).messages[1].content
    assert "[1] (f.txt, line 2)" in user


@pytest.mark.parametrize("fit", [1, 2, 3])
def test_the_lowest_ranked_passages_are_dropped_first(fit):
    hits = [make_hit(f"g{n}.txt", passage_file(n), n) for n in range(1, 5)]
    window = budget_for(QUESTION, hits[:fit], 64)
    request = build_request(QUESTION, hits, context_tokens=window, max_tokens=64)
    assert request.passages == hits[:fit]  # untouched, best first
    prompt = sum(count_tokens(m.content) for m in request.messages)
    assert prompt + 64 + TEMPLATE_OVERHEAD <= window


def test_everything_is_kept_when_it_fits():
    hits = [make_hit(f"g{n}.txt", passage_file(n), n) for n in range(1, 5)]
    request = build_request(QUESTION, hits, context_tokens=budget_for(QUESTION, hits, 64), max_tokens=64)
    assert request.passages == hits


# Multi-byte text: a token boundary can fall inside a character; the slice must stay verbatim.
OVERSIZE = "\n".join(
    f"Línea {i}: el glaciar Vatnajökull retrocedió {i} m — 氷河が後退した 🌋 año {1990 + i}." for i in range(1, 200)
)


def test_a_single_oversize_passage_is_cut_to_a_verbatim_slice():
    best = make_hit("big.txt", OVERSIZE, 1, start=OVERSIZE.index("Línea 3:"))
    runner_up = make_hit("g2.txt", passage_file(2), 2)
    small = make_hit("big.txt", OVERSIZE, 1, start=best.chunk.start_char, end=best.chunk.start_char + 1)
    base = budget_for(QUESTION, [small], 32)
    room_for_prompt = base - 32 - TEMPLATE_OVERHEAD - count_tokens(SYSTEM_PROMPT)
    # Every cut point in the first 60 tokens: several fall inside "ö", "—", "氷" or "🌋".
    for room in range(1, 60):
        request = build_request(QUESTION, [best, runner_up], context_tokens=base + room, max_tokens=32)
        [cut] = request.passages
        c = cut.chunk
        assert 0 < len(c.text) < len(best.chunk.text)
        assert "\ufffd" not in c.text, room
        assert best.chunk.text.startswith(c.text), room
        assert OVERSIZE[c.start_char : c.end_char] == c.text
        assert c.start_line == best.chunk.start_line
        assert c.end_line == OVERSIZE.count("\n", 0, c.end_char - 1) + 1
        assert (cut.rank, cut.score, c.source) == (best.rank, best.score, best.chunk.source)
        # a dropped partial character or a merge at the junction moves the count by a token or two
        assert count_tokens(request.messages[1].content) <= room_for_prompt + room + 2


def test_a_citation_into_a_cut_passage_still_verifies():
    best = make_hit("big.txt", OVERSIZE, 1)
    request = build_request(QUESTION, [best], context_tokens=budget_for(QUESTION, [make_hit("big.txt", OVERSIZE, 1, end=400)], 32), max_tokens=32)
    [cut] = request.passages
    assert cut.chunk.end_char < best.chunk.end_char
    [citation] = build_citations("The glacier retreated 2 m [1].", [1], request.passages, {"big.txt": OVERSIZE}.get)
    assert citation.verified
    assert citation.end_line <= cut.chunk.end_line


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        (REFUSAL, True),
        ("i could not find this in the documents", True),
        ("I couldn't find anything about that.", True),
        ("The passages do not mention it.", True),
        ("Hekla erupted in 1947 [1].", False),
        ("", False),
    ],
)
def test_is_refusal(text, refused):
    assert is_refusal(text) is refused


def hl(marker: int, sentence: str) -> Highlight:
    return Highlight(marker=marker, sentence=sentence, start=0, end=len(sentence), score=1.0)


def test_highlights_sit_between_the_passages_and_the_question():
    files = {f"g{n}.txt": passage_file(n) for n in (1, 2)}
    hits = [make_hit("g1.txt", files["g1.txt"], 1), make_hit("g2.txt", files["g2.txt"], 2)]
    highlight = "Glacier 2 line 4: the ice retreated 12 metres that year."
    request = build_request(QUESTION, hits, context_tokens=8192, max_tokens=100, highlights=[hl(2, highlight)])
    user = request.messages[1].content
    key = user.index(f"Most relevant sentences: {highlight} [2]")
    assert user.index("Passage [2]") < key < user.rindex(f"Question: {QUESTION}")
    # without highlights, no empty heading
    assert "Most relevant" not in build_request(QUESTION, hits, context_tokens=8192, max_tokens=100).messages[1].content


def test_highlights_of_a_dropped_passage_go_with_it():
    files = {f"g{n}.txt": passage_file(n) for n in (1, 2)}
    hits = [make_hit("g1.txt", files["g1.txt"], 1), make_hit("g2.txt", files["g2.txt"], 2)]
    highlights = [hl(1, "Glacier 1 line 2: the ice retreated 6 metres that year."),
                  hl(2, "Glacier 2 line 4: the ice retreated 12 metres that year.")]
    # room for passage 1 and its highlight, not for passage 2
    window = count_tokens(user_message(QUESTION, hits[:1], highlights)) + 100 + TEMPLATE_OVERHEAD + count_tokens(SYSTEM_PROMPT)
    request = build_request(QUESTION, hits, context_tokens=window, max_tokens=100, highlights=highlights)
    user = request.messages[1].content
    assert request.passages == hits[:1]
    assert highlights[0].sentence in user and highlights[1].sentence not in user
    assert count_tokens(user) + 100 + TEMPLATE_OVERHEAD + count_tokens(SYSTEM_PROMPT) <= window


def test_the_header_is_shown_as_context_in_the_label_not_as_passage_text():
    text = "Markets are splitting into blocs.\nIt resembles a new Cold War."
    hit = make_hit("thread.txt", text, 1)
    hit = hit.model_copy(update={"chunk": hit.chunk.model_copy(update={"header": "Comments > Leon Liao's avatar"})})
    user = build_request(QUESTION, [hit], context_tokens=8192, max_tokens=10).messages[1].content
    label, body = user.split("\n", 1)
    assert label == 'Passage [1] (thread.txt, lines 1-2; under "Comments > Leon Liao\'s avatar"):'
    assert body.startswith(text) and "Leon Liao" not in body
    plain = build_request(QUESTION, [make_hit("thread.txt", text, 1)], context_tokens=8192, max_tokens=10)
    assert plain.messages[1].content.split("\n", 1)[0] == "Passage [1] (thread.txt, lines 1-2):"


def test_line_span_counts_the_lines_of_a_slice_from_the_file():
    text = passage_file(1)
    start = text.index("Glacier 1 line 4")
    hit = make_hit("g.txt", text, 1, start, text.index("Glacier 1 line 9") - 1)
    assert line_span(hit.chunk) == (hit.chunk.start_line, hit.chunk.end_line) == (4, 8)
    inner = hit.chunk.text.index("Glacier 1 line 6")
    last = hit.chunk.text.index("Glacier 1 line 7") + 10
    assert line_span(hit.chunk, inner, last) == (6, 7)
    assert line_span(hit.chunk, inner, inner) == (6, 6)


def test_every_answer_request_ends_with_the_one_line_the_reading_request_swaps():
    text = passage_file(1, lines=3)
    request = build_request(QUESTION, [make_hit("g.txt", text, 1)], context_tokens=4096, max_tokens=64)
    content = request.messages[-1].content
    assert content.endswith(f"\n{ANSWER_INSTRUCTION}")
    assert corpus_user_message(QUESTION, [1]).endswith(f"Question: {QUESTION}\n{ANSWER_INSTRUCTION}")
    # The yes/no request keeps everything before that line, byte for byte.
    asked = judge_request(request).messages[-1].content
    assert asked == content[: -len(ANSWER_INSTRUCTION)] + JUDGE_INSTRUCTION


def test_brief_labels_name_a_file_and_its_heading_once_and_no_lines():
    def hit(source: str, rank: int, header: str) -> Hit:
        h = make_hit(source, passage_file(rank), rank, 0, 40)
        return h.model_copy(update={"chunk": h.chunk.model_copy(update={"header": header})})

    hits = [hit("a.txt", 1, "Ice > Alps"), hit("a.txt", 2, ""), hit("a.txt", 3, "Ice > Alps"),
            hit("a.txt", 4, "Ice > Andes"), hit("b.txt", 5, "Ice > Andes")]
    brief = user_message(QUESTION, hits, brief=True)
    labels = [line for line in brief.splitlines() if line.startswith("Passage [")]
    assert labels == [
        'Passage [1] (a.txt; under "Ice > Alps"):',
        "Passage [2] (same file):",
        "Passage [3] (same file):",  # its heading was said above, in the same file
        'Passage [4] (same file; under "Ice > Andes"):',
        'Passage [5] (b.txt; under "Ice > Andes"):',  # another file: named, with its heading
    ]
    full = user_message(QUESTION, hits)
    assert 'Passage [2] (a.txt, line 1):' in full  # the full labels keep every file and line
    assert count_tokens(brief) < count_tokens(full)
