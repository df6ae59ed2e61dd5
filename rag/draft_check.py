"""Check stage: compare a model's draft with the select stage's key sentences.

A small model sometimes answers worse than the sentences it was given: it names one company of
three, or writes sentences no passage supports. The extractive answer (the key sentences with
their markers) is the floor; a draft that falls below it by these checks is completed from the
documents' own words, or replaced by them, and the answer says so.

Pure functions over typed values; the assemble stage calls `check` for drafts a model wrote, with
its answer's support table (rag.citations.Support), which marker correction read before it.
"""

from __future__ import annotations

import re

from pydantic import Field

from rag.citations import MARKER, Support
from rag.embedding import Embedder
from rag.text import STOPWORDS, sentences, terms
from rag.types import Frozen, Highlight, Hit

# A draft holding fewer than this share of the best key sentence's facts missed its point, unless
# it holds this share of another key sentence's (it answered from that one: "Hekla erupted in 1947"
# follows "It erupted in 1947 ...", not the best-scored "Hekla is the most active volcano ...").
# Half: an incomplete answer names one of three, a complete one all of them.
HOLD_SHARE = 0.5
# A key sentence holding this share of the question's terms answers it: a draft missing its facts
# missed the answer even when it names something else from the passages ("ChatGPT" for "Which
# OpenAI model does DeepSeek rival?", whose key sentence names o1). A key sentence holding less
# ("Hekla is the most active volcano" for "When did Hekla erupt?", 1 of 2) may be context only.
KEY_ANSWERS = 0.6
# "Most" of the draft's sentences unsupported: more than half. A single stray sentence beside a
# supported one is left alone (false alarms cost more than a missed one: the text is replaced).
UNSUPPORTED_SHARE = 0.5
# At most this many names are appended; the line must stay short.
MAX_ADDED = 6

ADDED_NOTE = "the model's answer left out names the passages give; added from the documents"
QUOTED_NOTE = "the model's answer missed the passages' key sentence; added it from the documents"
REPLACED_NOTE = "the model's answer was not supported by the passages; showing the passages' own sentences"

# A word with inner dots, hyphens or apostrophes kept whole: U.S., Qwen3-Coder, China's.
_TOKEN = re.compile(r"\w+(?:[.'\u2019\-]\w+)*\.?")
_QUOTED = re.compile(r"[\"\u201c]([^\"\u201c\u201d]{2,60})[\"\u201d]")
# Between two names of one enumeration: "A, B", "A and B", "A, or B", "A/B".
_LIST_GAP = re.compile(r"\s*(?:,\s*(?:and|or)?|;|/|&|and|or)\s*", re.IGNORECASE)
_RUN_GAPS = (" ", "'s ", "\u2019s ")
_AND_OR = re.compile(r"\b(?:and|or)\b", re.IGNORECASE)
_JOINED = re.compile(r"\s+(?:and|or)\s+", re.IGNORECASE)
_PLURAL_ASK = re.compile(
    r"\b(?:what|who|which)\s+(?:are|were)\b|\bname\s+(?:the|all|some|two|three|four|five)\b"
    r"|\blist\b|\benumerate\b",
    re.IGNORECASE,
)
# "Which Chinese companies are ...", "Which cities stand ...": the noun follows which/what.
_WHICH = re.compile(r"\b(?:which|what)\s+((?:[\w'\u2019-]+\s*){1,3})", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)]*$")


class Fact(Frozen):
    """A name-like phrase of a key sentence: its text and whether it is an item of a list."""

    text: str
    words: tuple[str, ...]  # lower-cased, those the question does not hold
    listed: bool = False


class DraftCheck(Frozen):
    """The check stage's result: the text to show and what changed, in plain words."""

    text: str
    added: list[str] = Field(default_factory=list)  # the names or sentence appended
    replaced: bool = False  # the draft was replaced by the key sentences
    notes: list[str] = Field(default_factory=list)


def _clean(token: str) -> str:
    if token.endswith(".") and "." not in token[:-1]:
        token = token[:-1]  # a full stop, not an abbreviation's
    return re.sub(r"['\u2019]s$", "", token)


def _words(text: str) -> list[str]:
    return [_clean(m.group()).lower() for m in _TOKEN.finditer(text)]


def _same(a: str, b: str) -> bool:
    """Whether two lower-cased words name the same thing: equal, or one name's inflection of the
    other (China / Chinese, America / American), by a long shared prefix."""
    if a == b:
        return True
    if not (a.isalpha() and b.isalpha()):
        return False
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    return common >= max(4, min(len(a), len(b)) - 2)


def _found(words: tuple[str, ...], pool: set[str]) -> int:
    return sum(w in pool or any(_same(w, p) for p in pool) for w in words)


def _name_like(token: str) -> bool:
    if token.lower() in STOPWORDS or token == "I":
        return False
    return token[0].isupper() or (any(c.isdigit() for c in token) and len(token) >= 2)


def _phrases(sentence: str) -> list[tuple[int, int]]:
    """Spans of the name-like phrases of a sentence: runs of capitalised words or numbers and
    short quoted terms. The first word is capitalised anyway: it counts only when "and" or "or"
    joins it to a name ("Vienna and Budapest ...")."""
    quoted = [(m.start(1), m.end(1)) for m in _QUOTED.finditer(sentence) if len(m.group(1).split()) <= 6]
    spans: list[tuple[int, int]] = []
    first: tuple[int, int] | None = None
    for index, match in enumerate(_TOKEN.finditer(sentence)):
        token = _clean(match.group())
        start, end = match.start(), match.start() + len(token)
        # A run goes on across a space or a possessive: "Huawei Cloud", "Google's Gemini", "Llama 4".
        goes_on = index > 0 and bool(spans) and sentence[spans[-1][1] : start] in _RUN_GAPS
        if not (_name_like(token) or (goes_on and token.isdigit())) or any(s <= start < e for s, e in quoted):
            continue
        if index == 0:
            first = (start, end)
        elif goes_on:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    if first and spans and _JOINED.fullmatch(sentence[first[1] : spans[0][0]]):
        spans.insert(0, first)
    return sorted(spans + quoted)


def facts(sentence: str, question: str) -> list[Fact]:
    """The facts of a key sentence: its name-like phrases that the question does not already
    hold, each marked when it is an item of an enumeration ("Alibaba, Tencent and Baidu")."""
    spans = _phrases(sentence)
    listed: set[tuple[int, int]] = set()
    chain = spans[:1]
    closed = False  # "and"/"or" comes before an enumeration's last item
    for before, after in zip(spans, spans[1:] + [(len(sentence), len(sentence))]):
        gap = sentence[before[1] : after[0]]
        if after in spans and not closed and _LIST_GAP.fullmatch(gap):
            chain.append(after)
            closed = bool(_AND_OR.search(gap))
            continue
        # An enumeration has "and"/"or" or three items: "Gemini, China's ..." is none.
        if closed or len(chain) >= 3:
            listed.update(chain)
        chain, closed = [after], False
    asked = set(_words(question))
    out: list[Fact] = []
    for span in spans:
        text = sentence[span[0] : span[1]]
        # What a draft must hold of it: the words the question does not ("Huawei" of "Huawei Cloud"
        # when the question asks for cloud providers; "Cloud" alone holds nothing).
        words = tuple(w for w in _words(text) if not _found((w,), asked))
        if words and text.lower() not in {f.text.lower() for f in out}:
            out.append(Fact(text=text, words=words, listed=span in listed))
    return out


def asks_for_several(question: str) -> bool:
    """Whether a question asks for several things: "which companies", "what are", "list"."""
    if _PLURAL_ASK.search(question):
        return True
    for match in _WHICH.finditer(question):
        for word in match.group(1).split():
            plain = word.rstrip("'\u2019")
            if plain.lower() in STOPWORDS:
                break  # "what does", "which is": the verb; the noun, if any, came before it
            if word.islower() and len(plain) > 3 and re.search(r"(?:[^su]s|ies)$", plain):
                return True
    return False


def _held(fact: Fact, draft_words: set[str]) -> bool:
    return 2 * _found(fact.words, draft_words) >= len(fact.words)


def _answers(sentence: str, question: str) -> bool:
    """Whether a sentence holds KEY_ANSWERS of the question's terms."""
    asked = set(terms(question))
    return bool(asked) and len(asked & set(terms(sentence))) >= KEY_ANSWERS * len(asked)


def _misses_plain_point(own: set[str], sentence: str, question: str) -> bool:
    """Whether a draft misses a key sentence that makes its point in plain words, without a name
    ("... focus on ethical practices, safety, and transparency ..."): it holds under HOLD_SHARE of
    the sentence's content words the question does not ("these values" holds one of seven)."""
    point = set(terms(sentence)) - set(terms(question))
    return bool(point) and len(own & point) < HOLD_SHARE * len(point)


def _names_from_passages(question: str, draft: str, passages: list[Hit]) -> bool:
    """Whether the draft names something of its own that the passages hold (a year, a name): it
    answered from a passage sentence, if not from a key one."""
    pool = {w for hit in passages for w in _words(hit.chunk.text)}
    for s, e in sentences(draft):
        for fact in facts(draft[s:e], question):
            if _found(fact.words, pool) == len(fact.words):
                return True
    return False


def _missing_names(
    question: str, draft: str, key: list[Highlight], passages: list[Hit]
) -> tuple[list[tuple[int, list[str]]], Highlight | None]:
    """What the draft misses: for a question asking for several things, the list items of the
    key sentences it started (or of the best one) per marker; else the best key sentence to quote
    when the draft missed its point: it holds under HOLD_SHARE of the facts of every key sentence
    (none when one thing is asked) and none of their other words, and the sentence answers the
    question or the draft names nothing else the passages hold."""
    plain = MARKER.sub(" ", draft)
    draft_words = set(_words(plain))
    per_key = [facts(h.sentence, question) for h in key]
    held = [sum(_held(f, draft_words) for f in found) for found in per_key]
    several = asks_for_several(question)
    # A question asking for one thing is answered by one fact of a key sentence, however many
    # names that sentence holds ("Qwen3-Coder" of a sentence listing six models).
    # Nor does a draft miss the point that says in its own words what a key sentence says
    # ("agentic reasoning" for "What does Kimi K2 specialize in?"): answers are not always names.
    own = set(terms(plain)) - set(terms(question))
    # The best key sentence without names is held by half its words, not by one shared word.
    plain_point = not per_key[0] and _misses_plain_point(own, key[0].sentence, question)
    short = (
        (bool(per_key[0]) or plain_point)
        and all(n < HOLD_SHARE * len(found) for n, found in zip(held, per_key) if found)
        and (several or not any(held))
        and not any(own & set(terms(h.sentence)) for h in key[int(plain_point):])
        and (_answers(key[0].sentence, question) or not _names_from_passages(question, plain, passages))
    )
    if not (short or several):
        return [], None
    groups: list[tuple[int, list[str]]] = []
    seen: set[str] = set()
    for index, (highlight, found) in enumerate(zip(key, per_key)):
        listed = [f for f in found if f.listed]
        # Asked for several: a list the draft started (it names one of its items), or the best
        # sentence's list it missed. Asked for one thing, a missed point is quoted whole instead.
        engaged = several and ((index == 0 and short) or any(_held(f, draft_words) for f in listed))
        names = [f.text for f in listed if engaged and not _held(f, draft_words) and f.text.lower() not in seen]
        seen.update(n.lower() for n in names)
        if names:
            groups.append((highlight.marker, names))
    if groups:
        return groups, None
    return [], key[0] if short else None


def _append(draft: str, line: str) -> str:
    """The draft with one more sentence, closing the last one first when it lacks a full stop."""
    text = draft.rstrip()
    if not _SENTENCE_END.search(MARKER.sub("", text).rstrip()):
        text += "."
    return f"{text} {line}"


def _complete(question: str, draft: str, key: list[Highlight], passages: list[Hit]) -> DraftCheck:
    groups, quote = _missing_names(question, draft, key, passages)
    if quote is not None:
        body = _SENTENCE_END.sub("", quote.sentence.rstrip())
        line = f'The documents say: "{body}" [{quote.marker}].'
        return DraftCheck(text=_append(draft, line), added=[quote.sentence], notes=[QUOTED_NOTE])
    if not groups:
        return DraftCheck(text=draft)
    parts, added = [], []
    for marker, names in groups:
        names = names[: MAX_ADDED - len(added)]
        if names:
            parts.append(f"{', '.join(names)} [{marker}]")
            added += names
    line = f"The documents also name: {'; '.join(parts)}."
    return DraftCheck(text=_append(draft, line), added=added, notes=[ADDED_NOTE])


def unsupported_share(draft: str, support: Support) -> float:
    """The share of the draft's sentences (those with content words) no numbered passage supports.

    Its sentences are those of the text with its markers blanked: a full stop with a marker glued
    to it ("... in 1918.[1] Hekla ...") ends a sentence here, as this check has always counted.
    """
    plain = MARKER.sub(" ", draft)
    claims = [plain[s:e].strip() for s, e in sentences(plain)]
    claims = [c for c in claims if terms(c)]
    if not claims:
        return 0.0
    return 1 - sum(support.backs(claims)) / len(claims)


def check_draft(
    question: str,
    draft: str,
    key: list[Highlight],
    passages: list[Hit],
    embedder: Embedder | None,
) -> DraftCheck:
    """`check` for one draft on its own."""
    return check(question, draft, key, passages, Support.of(passages, embedder))


def check(
    question: str,
    draft: str,
    key: list[Highlight],
    passages: list[Hit],
    support: Support | None,
) -> DraftCheck:
    """The draft, replaced by the key sentences when most of it is unsupported, or completed
    with the names of the key sentences it leaves out; unchanged when it passes."""
    if not key:
        return DraftCheck(text=draft)
    if support is not None and unsupported_share(draft, support) > UNSUPPORTED_SHARE:
        text = " ".join(f"{h.sentence} [{h.marker}]" for h in key)
        return DraftCheck(text=text, added=[h.sentence for h in key], replaced=True, notes=[REPLACED_NOTE])
    return _complete(question, draft, key, passages)
