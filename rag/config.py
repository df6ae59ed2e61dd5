"""Settings: one pydantic-settings model, env prefix RAG_, read from `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rag.errors import ConfigError

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RetrievalMode = Literal["dense", "bm25", "hybrid"]


class Settings(BaseSettings):
    """Every knob of the product; see `.env.example` for the documented list."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # Indexing
    seeds_dir: Path = Path("seeds")
    index_dir: Path = Path("index")
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    embedding_batch_size: int = Field(8, ge=1, le=4096)  # small batches pad less: see docs/BENCHMARKS.md
    chunk_tokens: int = Field(180, ge=16, le=8192)
    chunk_overlap: int = Field(30, ge=0)
    watch_debounce_ms: int = Field(800, ge=50)
    # Scanned PDF pages (no text layer): read by Tesseract OCR when it is installed, or skipped.
    ocr: Literal["auto", "off"] = "auto"

    # Vector store: FAISS + BM25 files in index_dir, or PostgreSQL (rag/postgres/)
    store: Literal["faiss", "postgres"] = "faiss"
    # FAISS index: exact (flat) up to faiss_flat_max chunks, approximate (HNSW) above; or forced.
    faiss_index: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    faiss_flat_max: int = Field(200_000, ge=0)
    faiss_hnsw_m: int = Field(32, ge=4, le=512)
    faiss_hnsw_ef_construction: int = Field(200, ge=8)
    faiss_hnsw_ef_search: int = Field(64, ge=1)
    faiss_ivf_nlist: int = Field(0, ge=0)  # 0: 4 * sqrt(chunks)
    faiss_ivf_nprobe: int = Field(16, ge=1)
    # Recall@10 against exact search an approximate index must reach when built (efSearch or
    # nprobe is raised until it does).
    faiss_min_recall: float = Field(0.95, ge=0.0, le=1.0)
    # PostgreSQL + pgvector (RAG_STORE=postgres): postgresql://user:password@host:port/dbname
    database_url: SecretStr | None = None
    pg_vector_type: Literal["vector", "halfvec"] = "vector"  # halfvec: half the space, ~1e-3 cosine error
    pg_hnsw_m: int = Field(16, ge=2, le=100)  # pgvector's limits
    pg_hnsw_ef_construction: int = Field(64, ge=4, le=1000)
    pg_hnsw_ef_search: int = Field(100, ge=1, le=1000)  # raised per query to the depth searched

    # Retrieval
    top_k: int = Field(5, ge=1, le=100)
    retrieval_mode: RetrievalMode = "hybrid"
    relevance_floor: float = Field(0.22, ge=-1.0, le=1.0)
    # Refuse when rag.answerability scores the passages under this (0, the default, turns the check
    # off: at 0.25 it also refuses some answerable follow-ups; see docs/BENCHMARKS.md).
    answerability_threshold: float = Field(0.0, ge=0.0, le=1.0)
    # Who is first asked, in one short pass, whether the passages state the answer (its reading
    # joins the score, refused under answerability_read_threshold; 0 turns it off): "auto" the
    # answering model when that costs it a few tokens (the local model); "model" the answering
    # model whatever it is (an OpenAI-compatible endpoint too: one more short request); "local"
    # the local model for every backend (the extractive one included); "none" nobody.
    answerability_reader: Literal["auto", "model", "local", "none"] = "auto"
    answerability_read_threshold: float = Field(0.3, ge=0.0, le=1.0)  # tuned: rag.answerability
    max_question_chars: int = Field(2000, ge=10)

    # Generation
    generator: str = "auto"
    llm_model_path: Path | None = None
    llm_context_tokens: int = Field(8192, ge=512)  # room for a small corpus read whole (auto)
    llm_max_tokens: int = Field(384, ge=16)
    llm_threads: int | None = None  # default: the cores this container may use (its CPU quota)
    llm_batch_tokens: int = Field(512, ge=32, le=8192)  # prompt tokens read per step (n_batch)
    llm_flash_attn: bool = False
    # Answers the local model writes at once in one batch (rag.generation.llama_batch); 1 = one at
    # a time, each waiting for the one before (measured faster for one user on two cores, and
    # within 1.2x for eight: docs/BENCHMARKS.md).
    llm_parallel: int = Field(1, ge=1, le=16)
    llm_temperature: float = Field(0.1, ge=0.0, le=2.0)
    # Show the model the sentences that match the question best, after the passages.
    prompt_highlights: bool = True
    # What a model reads: "auto" = the whole corpus, read once per build, when it fits the local
    # model's context; else the best passages from their saved states once saved (else as
    # "windowed"); "stitched" = the best passages put together from states saved per passage
    # (rag.passage_states); "windowed" = the best sentences with their neighbours, up to
    # prompt_budget_tokens; "passages" = the retrieved passages whole.
    prompt_context: Literal["auto", "corpus", "stitched", "windowed", "passages"] = "auto"
    prompt_passages: int = Field(4, ge=1, le=9)  # passages a stitched prompt holds
    # Key sentences a stitched prompt shows after them, within this many tokens (the best one at
    # least; prompt_highlights=false shows none): read with every passage in view.
    prompt_key_tokens: int = Field(40, ge=1)  # chosen on SQuAD's tune half: docs/BENCHMARKS.md
    # Disk kept for passage states (about 28 KiB per token of the default model); the least
    # recently used are removed beyond it, and read again when next needed.
    passage_states_mb: int = Field(4096, ge=16)
    prompt_budget_tokens: int = Field(120, ge=20, le=8000)  # measured: docs/BENCHMARKS.md
    prompt_window: int = Field(1, ge=0, le=5)  # neighbouring sentences on each side
    # The local model refuses when the chance it gives to starting with the refusal is at least
    # this (its own doubt, read before it writes a word); 1 turns the check off. See docs/BENCHMARKS.md.
    llm_refusal_threshold: float = Field(0.1, ge=0.0, le=1.0)
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout: float = Field(60.0, gt=0)
    openai_retries: int = Field(2, ge=0, le=10)
    answer_deadline: float = Field(180.0, gt=0)
    # Answers worked on at once when the backend can serve several (an OpenAI-compatible endpoint,
    # the extractive backend); the local model answers one at a time, and the page shows each
    # waiting question its place in the queue.
    max_concurrent: int = Field(4, ge=1, le=64)

    # What the product logs (the CLI, the server); llama.cpp's own log is shown only at debug.
    log_level: Literal["debug", "info", "warning", "error"] = "warning"

    # Serving
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=1, le=65535)
    auth: SecretStr | None = None  # "user:password", or several: "alice:pw1,bob:pw2"
    watch: bool = True

    # Adding and removing documents (page, `rag add`/`rag remove`, rag.add_documents)
    uploads_enabled: bool = True  # false for a read-only deployment
    upload_types: Annotated[tuple[str, ...], NoDecode] = Field(default_factory=lambda: _readable_types())
    upload_max_mb: float = Field(20.0, gt=0)  # per file
    upload_max_total_mb: float = Field(100.0, gt=0)  # per upload

    @field_validator("log_level", "ocr", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("upload_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple, set, frozenset)):
            return value
        types = []
        for item in items:
            ext = str(item).strip().lower()
            if not ext:
                continue
            ext = ext if ext.startswith(".") else "." + ext
            if ext not in _readable_types():
                raise ValueError(f"{ext} files cannot be read; choose from {', '.join(_readable_types())}")
            types.append(ext)
        return tuple(dict.fromkeys(types))

    @field_validator("openai_base_url", "llm_model_path", "openai_api_key", "auth", "database_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"RAG_CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than "
                f"RAG_CHUNK_TOKENS ({self.chunk_tokens})"
            )
        if self.auth is not None and ":" not in self.auth.get_secret_value():
            raise ValueError("RAG_AUTH must look like user:password")
        return self

    def require_seeds_dir(self) -> Path:
        """The seeds folder, or a ConfigError naming RAG_SEEDS_DIR."""
        if not self.seeds_dir.is_dir():
            raise ConfigError(
                f"RAG_SEEDS_DIR: folder {str(self.seeds_dir)!r} does not exist; "
                "create it or point RAG_SEEDS_DIR (or --seeds) at your documents"
            )
        return self.seeds_dir

    def auth_pair(self) -> tuple[str, str] | None:
        """The first login of RAG_AUTH (the only one, unless several are given)."""
        users = self.auth_users()
        return users[0] if users else None

    def auth_users(self) -> list[tuple[str, str]]:
        """Every (user, password) of RAG_AUTH. Several are separated by commas; a value with a
        part lacking `:` is one login whose password has a comma in it, as before."""
        if self.auth is None:
            return []
        value = self.auth.get_secret_value()
        parts = value.split(",")
        if len(parts) < 2 or not all(":" in p and p.partition(":")[0].strip() for p in parts):
            parts = [value]
        return [(user.strip() if len(parts) > 1 else user, password)
                for user, _, password in (p.partition(":") for p in parts)]


def _readable_types() -> tuple[str, ...]:
    from rag.loaders import SUPPORTED

    return tuple(sorted(SUPPORTED))


def load_settings(**overrides: object) -> Settings:
    """Build Settings from env/.env plus overrides, turning validation errors into one ConfigError."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if loc:
            parts.append(f"RAG_{loc[0].upper()}: {msg}")
        else:
            parts.append(msg)
    return "invalid settings: " + "; ".join(parts)
