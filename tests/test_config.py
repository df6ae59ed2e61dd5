"""Settings validation: bad values become one ConfigError that names the RAG_* variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import DEFAULT_EMBEDDING_MODEL, Settings, load_settings
from rag.errors import ConfigError
from rag.indexer import build_index


def test_defaults_without_env(in_tmp: Path) -> None:
    settings = load_settings(_env_file=None)
    assert settings.embedding_model == DEFAULT_EMBEDDING_MODEL
    assert settings.chunk_overlap < settings.chunk_tokens
    assert settings.seeds_dir == Path("seeds")


@pytest.mark.parametrize("overlap", [180, 181, 1000])
def test_overlap_not_smaller_than_chunk_is_config_error(in_tmp: Path, overlap: int) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None, chunk_tokens=180, chunk_overlap=overlap)
    message = str(info.value)
    assert "RAG_CHUNK_OVERLAP" in message
    assert "RAG_CHUNK_TOKENS" in message
    assert str(overlap) in message


def test_overlap_from_environment_is_config_error(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_CHUNK_TOKENS", "64")
    monkeypatch.setenv("RAG_CHUNK_OVERLAP", "64")
    with pytest.raises(ConfigError, match="RAG_CHUNK_OVERLAP"):
        load_settings(_env_file=None)


def test_overlap_from_dotenv_in_cwd_is_config_error(in_tmp: Path) -> None:
    (in_tmp / ".env").write_text("RAG_CHUNK_TOKENS=50\nRAG_CHUNK_OVERLAP=70\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="RAG_CHUNK_OVERLAP"):
        load_settings()


def test_dotenv_in_cwd_is_read(in_tmp: Path) -> None:
    (in_tmp / ".env").write_text("RAG_CHUNK_TOKENS=77\nRAG_EMBEDDING_MODEL=hashing-64\n", encoding="utf-8")
    settings = load_settings()
    assert settings.chunk_tokens == 77
    assert settings.embedding_model == "hashing-64"


def test_bad_number_names_variable(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_CHUNK_TOKENS", "lots")
    with pytest.raises(ConfigError, match="RAG_CHUNK_TOKENS"):
        load_settings(_env_file=None)


def test_valid_overlap_just_below_chunk(in_tmp: Path) -> None:
    settings = load_settings(_env_file=None, chunk_tokens=64, chunk_overlap=63)
    assert (settings.chunk_tokens, settings.chunk_overlap) == (64, 63)


def test_missing_seeds_dir_names_setting(in_tmp: Path) -> None:
    missing = in_tmp / "no-such-folder"
    settings = Settings(_env_file=None, seeds_dir=missing)  # type: ignore[call-arg]
    with pytest.raises(ConfigError) as info:
        settings.require_seeds_dir()
    assert "RAG_SEEDS_DIR" in str(info.value)
    assert str(missing) in str(info.value)


def test_seeds_path_that_is_a_file_is_config_error(in_tmp: Path) -> None:
    afile = in_tmp / "seeds.txt"
    afile.write_text("not a folder", encoding="utf-8")
    settings = Settings(_env_file=None, seeds_dir=afile)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="RAG_SEEDS_DIR"):
        settings.require_seeds_dir()


def test_build_index_with_missing_seeds_dir_is_config_error(make_settings) -> None:
    settings = make_settings()  # tmp_path/seeds was never created
    with pytest.raises(ConfigError, match="RAG_SEEDS_DIR"):
        build_index(settings)
    assert not (settings.index_dir / "CURRENT").exists()
