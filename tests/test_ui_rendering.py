"""The chat page's HTML as pure functions of the library's values: no Gradio, no index, no server."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from rag.types import Answer, Citation, IndexReport, IndexStatus, Timings
from ui.rendering import (
    MAX_CITED_LINES,
    lines_label,
    render_answer,
    render_citations,
    render_error,
    render_generator_note,
    render_passage,
    render_question,
    render_report,
    render_status,
    render_stopped,
    render_streaming,
    streamed_text,
)
from ui.state import Activity, Turn, message_text

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = '<script>alert("x")</script>'
LINES = [f"line number {n} of the manual" for n in range(1, 21)]


def cite(marker=1, source="manual.txt", start=5, end=6, quote="line number 5 of the manual", **kw) -> Citation:
    return Citation(marker=marker, source=source, start_line=start, end_line=end, quote=quote, score=1.0, **kw)


def answer(text="Teapots brew at 451 degrees [1].", citations=(), **kw) -> Answer:
    return Answer(question="q", text=text, citations=list(citations), generator="extractive", **kw)


def test_rendering_imports_no_gradio():
    code = "import sys, ui.rendering, ui.state; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("args", "label"),
    [((4, 4), "line 4"), ((4, 9), "lines 4–9"), ((2, 3, 7), "lines 2–3 · page 7")],
)
def test_lines_label(args, label):
    assert lines_label(*args) == label


def test_answer_badges_only_markers_that_have_a_source():
    html = render_answer(answer("Brewed at 451 [1], per the manual [3].", [cite(1)]))
    assert '<span class="rag-marker">[1]</span>' in html
    assert "[3]" in html and ">[3]<" not in html
    assert '<b>[1]</b> manual.txt · lines 5–6' in html
    assert 'class="rag-answer rag-final"' in html


def test_answer_without_citations_has_no_sources_row():
    assert "rag-sources" not in render_answer(answer("Plain text."))


def test_refusal_is_a_refusal_without_sources():
    html = render_answer(answer("I could not find this in the documents.", [cite(1)], refused=True))
    assert 'class="rag-refusal rag-final"' in html and "Not in the documents" in html
    assert "rag-answer" not in html and "rag-sources" not in html


def test_details_line_shows_rewrite_backend_time_and_notes():
    html = render_answer(answer(
        standalone_question="When did Hekla <erupt>?", fallback_reason="openai failed",
        timings=Timings(total=2.345), mode="bm25",
    ))
    assert 'Searched for: <span class="rag-standalone">When did Hekla &lt;erupt&gt;?</span>' in html
    assert '<span class="rag-generator">extractive</span> · bm25' in html and "2.3 s" in html
    assert '<div class="rag-note">Note: openai failed</div>' in html
    assert "Searched for" not in render_answer(answer())


def test_user_and_model_text_is_escaped():
    for html in (
        render_answer(answer(f"It says {SCRIPT} [1].", [cite(1, source=f"{SCRIPT}.txt", quote=SCRIPT)])),
        render_error(SCRIPT),
        render_streaming(SCRIPT),
        render_question(SCRIPT),
        render_stopped(SCRIPT),
        render_citations(0, Turn(question=SCRIPT, text="t", citations=(cite(1, source=SCRIPT, quote=SCRIPT),))),
    ):
        assert "<script" not in html and "&lt;script&gt;" in html


def test_streaming_text_round_trips_to_what_arrived():
    assert "rag-thinking" in render_streaming("")
    shown = render_streaming('Hekla & "Katla" <b>')
    assert shown.endswith('<span class="rag-cursor">▍</span>')
    assert streamed_text(shown) == 'Hekla & "Katla" <b>'
    assert streamed_text(render_streaming("")) == ""
    assert streamed_text(render_answer(answer())) is None


def test_stopped_message_keeps_the_partial_text():
    assert render_stopped("Hekla erupted").startswith("Hekla erupted<div") and "Stopped." in render_stopped("x")
    assert "Stopped before an answer arrived." in render_stopped("  ")


def test_message_text_reads_strings_and_parts():
    assert message_text({"role": "user", "content": "hi"}) == "hi"
    assert message_text({"content": [{"type": "text", "text": "a"}, "junk", {"text": "b"}]}) == "ab"
    assert message_text({"content": None}) == "" and message_text("not a message") == ""


def test_citation_cards_carry_the_click_key_and_a_short_quote():
    long_quote = "word " * 100
    turn = Turn(question="Q?", text="t", citations=(cite(1), cite(2, quote=long_quote, verified=False)))
    html = render_citations(3, turn)
    assert 'Sources for <q>Q?</q>' in html
    assert 'data-cite="3:1"' in html and 'data-cite="3:2"' in html
    assert html.count("unverified</span>") == 1
    shown = html.split('data-cite="3:2"')[1].split('class="rag-cite-quote">')[1].split("</span>")[0]
    assert shown.endswith("…") and len(shown) <= 160


@pytest.mark.parametrize(
    ("turn", "expected"),
    [(None, "appear here"), (Turn(question="q", text="t", refused=True), "No sources"),
     (Turn(question="q", text="t"), "cites no sources")],
)
def test_citation_panel_without_cards(turn, expected):
    html = render_citations(0, turn)
    assert expected in html and "data-cite" not in html


def test_passage_highlights_the_cited_lines_in_context():
    html = render_passage(cite(start=5, end=6, quote="of the manual line number 6"), LINES, context=2)
    numbers = [int(part.split("</span>")[0]) for part in html.split('<span class="rag-ln">')[1:]]
    assert numbers == [3, 4, 5, 6, 7, 8]
    assert html.count('class="rag-line rag-hit"') == 2
    assert '<strong class="rag-quote">of the manual</strong></mark>' in html  # end of line 5
    assert '<strong class="rag-quote">line number 6</strong> of the manual' in html
    assert "rag-note" not in html


def test_passage_says_when_the_quote_or_the_lines_are_gone():
    moved = render_passage(cite(start=5, end=5, quote="not in this file"), LINES)
    assert "not at these lines any more" in moved and "rag-quote" not in moved
    gone = render_passage(cite(start=30, end=31), LINES)
    assert "no longer there" in gone and "rag-passage" not in gone


def test_passage_truncates_very_long_citations():
    lines = [f"l{n}" for n in range(1, 201)]
    html = render_passage(cite(start=1, end=200, quote="l1"), lines, context=0)
    assert html.count('class="rag-line rag-hit"') == MAX_CITED_LINES
    assert f"Showing the first {MAX_CITED_LINES} cited lines." in html


def test_passage_escapes_the_document():
    html = render_passage(cite(start=1, end=1, quote="alert"), [SCRIPT], context=0)
    assert "<script" not in html and '&lt;script&gt;<strong class="rag-quote">alert</strong>' in html


def test_report_lists_changes_and_says_whether_it_wrote():
    report = IndexReport(added=["a.txt"], changed=["<b>.txt"], unchanged=["c.txt"], skipped=["x.bin: binary"],
                         chunks=7, embedded_chunks=3, seconds=1.5, full_rebuild_reason="model changed", wrote=True)
    html = render_report(report)
    assert html.startswith('<div class="rag-report"><b>Index updated</b>')
    assert "1 added, 1 changed, 0 removed, 1 unchanged; 7 chunks, 3 embedded this run; 1.50 s" in html
    assert '<span class="rag-tag rag-tag-added">added</span> a.txt' in html
    assert '<span class="rag-tag rag-tag-changed">changed</span> &lt;b&gt;.txt' in html
    assert "rag-tag-skipped" in html and "Full rebuild: model changed" in html
    assert "already up to date" in render_report(IndexReport(unchanged=["c.txt"]))


def status(**kw) -> IndexStatus:
    values = dict(documents=2, chunks=9, embedding_model="org/small-model", dimension=384, chunk_tokens=256,
                  chunk_overlap=32, built_at=datetime(2024, 5, 1, 12, 30), index_dir="/i", sources=["a.txt", "b.md"])
    return IndexStatus(**(values | kw))


def test_status_panel_shows_the_index():
    html = render_status(status())
    assert '<b data-stat="documents">2</b>' in html and '<b data-stat="chunks">9</b>' in html
    assert 'title="org/small-model">small-model</b>' in html and "384 dimensions · 256-token chunks" in html
    assert '<b data-stat="built-at">2024-05-01 12:30:00</b>' in html
    assert "<li>a.txt</li><li>b.md</li>" in html and "rag-watch" not in html


def test_status_panel_without_an_index_says_so():
    assert "No index yet" in render_status(None)
    assert "run `rag index`" in render_status(None, error="no index; run `rag index`")


def test_status_panel_reports_what_the_watcher_did():
    activity = Activity(watching=True)
    assert "Watching the documents folder" in render_status(status(), activity)

    activity.record_report(IndexReport(added=["new.txt"], chunks=3, embedded_chunks=3, seconds=0.2, wrote=True))
    assert "Re-indexed at " in render_status(status(), activity) and "1 added" in render_status(status(), activity)

    activity.record_report(IndexReport(unchanged=["new.txt"]))  # a no-op check keeps the last real build
    assert "1 added" in render_status(status(), activity)

    activity.record_error(OSError("disk <full>"))
    assert "Re-indexing failed: disk &lt;full&gt;" in render_status(status(), activity)


def test_generator_note():
    assert "(picked on the first question)" in render_generator_note("auto", None)
    assert render_generator_note("openai", None).endswith('<b class="rag-generator">openai</b></div>')
    assert '>llamacpp <small>(for auto)</small>' in render_generator_note("auto", "llamacpp")
    assert '<b class="rag-generator">extractive</b>' in render_generator_note("extractive", "extractive")
