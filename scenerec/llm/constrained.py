"""Token masks that keep a transformers model's output inside a JSON schema: llguidance or xgrammar.

Both compile a JSON schema against the tokenizer and, per step, give a bitmask of the tokens that keep
the output valid. llguidance is the default because it is one 3 MB wheel with no dependencies, while
xgrammar pulls triton on Linux x86-64 (about 1 GB installed, measured) — useless on a CPU. Either gives
the same guarantee: an answer decoded under the mask parses against the schema unless it is cut off by
the token limit.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from .base import BackendNotInstalledError, JSONSchema

GrammarName = Literal["auto", "llguidance", "xgrammar"]


class SchemaMatcher:
    """One sequence's position in one schema's grammar."""

    def fill(self, bitmask: Any, row: int) -> None:
        raise NotImplementedError

    def accept(self, token: int) -> bool:
        raise NotImplementedError

    def finished(self) -> bool:
        raise NotImplementedError


class GrammarEngine:
    """Compiles schemas (cached) and applies masks to a batch of logits."""

    name: str

    def __init__(self) -> None:
        self._compiled: dict[str, Any] = {}

    def matcher(self, schema: JSONSchema) -> SchemaMatcher:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._compiled:
            if len(self._compiled) > 128:
                self._compiled.clear()
            self._compiled[key] = self._compile(key)
        return self._matcher(self._compiled[key])

    def _compile(self, schema_json: str) -> Any:
        raise NotImplementedError

    def _matcher(self, compiled: Any) -> SchemaMatcher:
        raise NotImplementedError

    def allocate(self, batch: int) -> Any:
        raise NotImplementedError

    def apply(self, logits: Any, bitmask: Any, rows: list[int]) -> None:
        raise NotImplementedError


class _LLGuidanceMatcher(SchemaMatcher):
    def __init__(self, llguidance: Any, tokenizer: Any, grammar: str) -> None:
        self._torch_api = llguidance.torch
        self._matcher = llguidance.LLMatcher(tokenizer, grammar)

    def fill(self, bitmask: Any, row: int) -> None:
        self._torch_api.fill_next_token_bitmask(self._matcher, bitmask, row)

    def accept(self, token: int) -> bool:
        return bool(self._matcher.consume_token(token))

    def finished(self) -> bool:
        return bool(self._matcher.is_stopped())


class LLGuidanceEngine(GrammarEngine):
    name = "llguidance"

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: list[int]) -> None:
        super().__init__()
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self._llg = llguidance
        self._tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=stop_ids)
        self._vocab = vocab_size
        self._shifts: Any = None

    def _compile(self, schema_json: str) -> Any:
        grammar = self._llg.LLMatcher.grammar_from_json_schema(
            schema_json, defaults={"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
        )
        is_error, messages = self._llg.LLMatcher.validate_grammar_with_warnings(grammar, self._tokenizer)
        if is_error:
            raise ValueError(f"schema not supported by llguidance: {messages[0]}")
        return grammar

    def _matcher(self, compiled: Any) -> SchemaMatcher:
        return _LLGuidanceMatcher(self._llg, self._tokenizer, compiled)

    def allocate(self, batch: int) -> Any:
        return self._llg.torch.allocate_token_bitmask(batch, self._vocab)

    def apply(self, logits: Any, bitmask: Any, rows: list[int]) -> None:
        # llguidance's own apply goes through torch.compile, which recompiles for every new batch shape
        # (seconds to minutes each on a CPU); unpacking the bits is cheap
        import torch

        if self._shifts is None:
            self._shifts = torch.arange(32, dtype=torch.int32)
        index = torch.tensor(rows, dtype=torch.long)
        words = bitmask.index_select(0, index)
        allowed = ((words.unsqueeze(-1) >> self._shifts) & 1).bool().reshape(len(rows), -1)
        width = logits.shape[-1]
        blocked = ~allowed[:, :width]
        logits[index] = logits.index_select(0, index).masked_fill(blocked, float("-inf"))


class _XGrammarMatcher(SchemaMatcher):
    def __init__(self, xgrammar: Any, compiled: Any) -> None:
        self._matcher = xgrammar.GrammarMatcher(compiled)

    def fill(self, bitmask: Any, row: int) -> None:
        self._matcher.fill_next_token_bitmask(bitmask, row)

    def accept(self, token: int) -> bool:
        return bool(self._matcher.accept_token(token))

    def finished(self) -> bool:
        return bool(self._matcher.is_terminated())


class XGrammarEngine(GrammarEngine):
    name = "xgrammar"

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: list[int]) -> None:
        super().__init__()
        import xgrammar

        self._xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_ids
        )
        self._compiler = xgrammar.GrammarCompiler(info, max_threads=1)
        self._vocab = vocab_size

    def _compile(self, schema_json: str) -> Any:
        return self._compiler.compile_json_schema(
            schema_json, any_whitespace=False, separators=(",", ":"), strict_mode=True
        )

    def _matcher(self, compiled: Any) -> SchemaMatcher:
        return _XGrammarMatcher(self._xgr, compiled)

    def allocate(self, batch: int) -> Any:
        return self._xgr.allocate_token_bitmask(batch, self._vocab)

    def apply(self, logits: Any, bitmask: Any, rows: list[int]) -> None:
        self._xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=rows)


ENGINES: dict[str, type[GrammarEngine]] = {"llguidance": LLGuidanceEngine, "xgrammar": XGrammarEngine}


def make_engine(name: GrammarName, tokenizer: Any, vocab_size: int, stop_ids: list[int]) -> GrammarEngine:
    """The named engine, or for "auto" the first installed of llguidance, xgrammar."""
    order = ["llguidance", "xgrammar"] if name == "auto" else [name]
    for candidate in order:
        try:
            return ENGINES[candidate](tokenizer, vocab_size, stop_ids)
        except ImportError:
            continue
    raise BackendNotInstalledError(
        "constrained decoding needs llguidance (or xgrammar): pip install 'scenerec[llm]'"
    )
