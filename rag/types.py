"""Typed, immutable records passed between the stages of the pipeline."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Section(Frozen):
    """A part of a document whose chunks all carry one header: a sheet (its name and header row),
    a slide, a chapter, a message (its From, To, Date and Subject)."""

    start: int  # character offset in the document's text
    header: str


class Document(Frozen):
    """A loaded file: its text and where it came from."""

    path: str  # relative to the seeds folder, forward slashes; what citations show
    text: str
    content_hash: str  # sha256 of the file's bytes
    kind: str  # txt, md, html, pdf, docx, pptx, xlsx, csv, epub, eml
    # Character offset at which each page starts in `text` (page 1 first): a PDF's pages, a deck's
    # slides, a workbook's sheets, a book's chapters.
    page_starts: tuple[int, ...] = ()
    # In order of start; a chunk never spans two (see rag.chunking). Empty: headers come from the
    # document's own title and heading lines.
    sections: tuple[Section, ...] = ()

    def page_at(self, offset: int) -> int | None:
        if not self.page_starts:
            return None
        page = 1
        for number, start in enumerate(self.page_starts, start=1):
            if start <= offset:
                page = number
        return page


class Chunk(Frozen):
    """A slice of a document, small enough for the embedding model, that knows its place."""

    id: str
    source: str
    ordinal: int
    text: str  # exactly document.text[start_char:end_char]
    start_char: int
    end_char: int
    start_line: int  # 1-based, inclusive
    end_line: int  # 1-based, inclusive
    page: int | None = None
    page_end: int | None = None
    tokens: int
    # Where the slice sits: the document's title and the nearest heading line above its start
    # ("Discussion about this post > Leon Liao's avatar"). Embedded and searched with the text,
    # shown to a model as context, never quoted: it is not part of the slice.
    header: str = ""


class Hit(Frozen):
    """A retrieved chunk with its scores."""

    chunk: Chunk
    score: float  # the ranking score of the mode used (RRF for hybrid)
    dense_score: float | None = None  # cosine similarity to the question
    bm25_score: float | None = None
    rank: int


class Highlight(Frozen):
    """A sentence of a numbered passage that answers the question well (the select stage's output).

    `start`/`end` are character offsets inside the passage's chunk text, so a window around the
    sentence stays a verbatim slice of the file.
    """

    marker: int  # 1-based passage number
    sentence: str  # whitespace-collapsed text, as shown to a model or quoted in an answer
    start: int
    end: int
    score: float


class Selection(Frozen):
    """The select stage's output: every candidate sentence ranked, and the few that answer."""

    ranked: list[Highlight] = Field(default_factory=list)  # best first
    key: list[Highlight] = Field(default_factory=list)  # what the extractive answer quotes


class Message(Frozen):
    role: str
    content: str


class GenerationRequest(Frozen):
    """The question, the numbered passages ([1] is passages[0]) and the prompt built from them."""

    question: str
    passages: list[Hit]
    messages: list[Message]
    highlights: list[Highlight] | None = None  # the key sentences; None when not selected
    # A saved model state holding the prompt's system message already read (see rag.corpus_cache).
    prefix_state: str | None = None
    # A folder of saved passage states: the system message is put together from them (rag.passage_states).
    passage_states: str | None = None
    max_tokens: int = 384
    temperature: float = 0.1


class Note(str):
    """A piece of an answer's stream that carries no text (it is the empty string, so whatever
    joins the pieces is unchanged): what the model is doing meanwhile, in `text`, for a page or
    an API to show (a place in the queue)."""

    text: str

    def __new__(cls, text: str) -> "Note":
        note = super().__new__(cls, "")
        note.text = text
        return note


class Citation(Frozen):
    """One `[n]` marker of an answer resolved to verified lines of a file."""

    marker: int
    source: str
    start_line: int
    end_line: int
    page: int | None = None
    quote: str
    score: float
    verified: bool = True


class Timings(Frozen):
    retrieve: float = 0.0
    generate: float = 0.0
    total: float = 0.0
    first_token: float | None = None


class Draft(Frozen):
    """What the generate stage hands to the assemble stage: the raw text and where it came from."""

    question: str
    standalone: str  # the question rewritten to stand alone (the same text without history)
    raw: str  # the generator's text with its [n] markers
    passages: list[Hit]  # what [n] refers to: passages[n - 1]
    hits: list[Hit]  # what retrieval found (shown as sources)
    generator: str  # who answered, e.g. "llamacpp" or "extractive (fallback from llamacpp)"
    trust_markers: bool = False  # markers placed by the passages themselves, not by a model
    key: list[Highlight] = Field(default_factory=list)  # the select stage's key sentences, marked into passages
    mode: str = "hybrid"
    notes: list[str] = Field(default_factory=list)
    timings: Timings = Field(default_factory=Timings)
    decided_by: str | None = None  # the decide stage's check that refused (rag.answerability)


class Claim(Frozen):
    """One sentence of an answer and the `[n]` markers it carries (rag.citations.parse)."""

    start: int  # where it starts in the answer (the first one: at any markers written before it)
    end: int  # where it ends, markers written after its full stop included
    sentence: str  # as written, with the markers inside it, without those before or after it
    text: str  # the sentence without markers: what is compared with the passages
    markers: tuple[int, ...] = ()  # inside it or written after its full stop, in order
    opening: tuple[int, ...] = ()  # written before the answer's first sentence (the first claim's)


class MarkedText(Frozen):
    """An answer's text with its `[n]` markers parsed: each claim with its markers, and the valid
    markers in order of first appearance (what the citations follow)."""

    text: str
    markers: list[int] = Field(default_factory=list)
    claims: list[Claim] = Field(default_factory=list)


class Answer(Frozen):
    """What `ask()` returns."""

    question: str
    text: str
    citations: list[Citation] = Field(default_factory=list)
    passages: list[Hit] = Field(default_factory=list)
    refused: bool = False
    generator: str
    mode: str = "hybrid"
    standalone_question: str | None = None
    fallback_reason: str | None = None
    timings: Timings = Field(default_factory=Timings)
    # Which check decided a refusal or changed the draft: "relevance floor", "features" or
    # "reading" (the decide stage, before any writing); "model" (the model refused itself);
    # "draft check" (completed or replaced); "echo check" (withheld). None: answered as written.
    decided_by: str | None = None


class DocumentEntry(Frozen):
    path: str
    content_hash: str
    chunk_ids: list[str]
    kind: str


class Manifest(Frozen):
    """What an index build was made from; checked on every load."""

    schema_version: int
    embedding_model: str
    dimension: int
    max_model_tokens: int
    chunk_tokens: int
    chunk_overlap: int
    tokenizer: str
    documents: dict[str, DocumentEntry]
    chunk_count: int
    library_versions: dict[str, str]
    built_at: datetime
    build_seconds: float
    files: dict[str, str]  # file name in the build folder -> sha256
    # The vector index: "flat" (exact), "hnsw" or "ivf" (approximate, with their parameters and
    # the recall@10 against exact search measured when built). Defaults read older manifests.
    index_kind: str = "flat"
    index_parameters: dict[str, int] = Field(default_factory=dict)
    index_recall: float | None = None


class IndexReport(Frozen):
    """Summary of one `rag index` run."""

    added: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    chunks: int = 0
    embedded_chunks: int = 0
    seconds: float = 0.0
    full_rebuild_reason: str | None = None
    wrote: bool = False


class IndexStatus(Frozen):
    documents: int
    chunks: int
    embedding_model: str
    dimension: int
    chunk_tokens: int
    chunk_overlap: int
    built_at: datetime
    index_dir: str
    sources: list[str]
    kinds: dict[str, int] = Field(default_factory=dict)  # documents by kind: {"pdf": 3, "xlsx": 1}
    index_kind: str | None = None  # from the manifest: flat, hnsw, ivf
    index_parameters: dict[str, int] = Field(default_factory=dict)
    index_recall: float | None = None
