"""GPU check for issue 4: the vllm backend's batch rerank end to end, with structured outputs.

Nothing can be downloaded on the GPU machine, so the model is built here: a byte-level BPE tokenizer
trained in-process on a few hundred synthetic product titles, and a small randomly initialised Llama
(4 layers, width 256) saved to a temp folder. Its answers are noise, which is the point: the check is
that vLLM starts with prefix caching, that every schema-constrained answer parses, that the rerank
guarantees hold for a batch of users, and how fast it goes (prompts/s, generated tokens/s).

Prints SKIP and exits 0 without CUDA or without vllm; exits 1 when a check fails.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = [
    "acrylic",
    "paint",
    "set",
    "brush",
    "pens",
    "sketch",
    "pad",
    "canvas",
    "panels",
    "glitter",
    "gel",
    "pens",
    "knitting",
    "needles",
    "bamboo",
    "stapler",
    "paper",
    "clips",
    "sticky",
    "notes",
    "fineliner",
    "desk",
    "organiser",
    "printer",
    "paper",
    "highlighters",
    "binder",
    "clips",
    "pencil",
    "case",
    "refills",
    "whiteboard",
    "markers",
    "folders",
    "label",
    "tape",
    "lamp",
    "notebook",
    "scissors",
]


def build_model(folder: Path) -> Path:
    """A random tiny Llama and a byte-level tokenizer, saved as a Hugging Face folder."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(2000)]
    corpus += ['{"because":"h1","reason":"a reason"}', '{"order":["c1","c2"]}', "yes no Yes No"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=1024, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    import torch

    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> int:
    try:
        import torch
    except ImportError:
        print("SKIP gpu_llm_check: torch is not installed")
        return 0
    if not torch.cuda.is_available():
        print(f"SKIP gpu_llm_check: torch sees no CUDA device (torch {torch.__version__})")
        return 0
    try:
        import vllm
    except ImportError:
        print("SKIP gpu_llm_check: vllm is not installed (pip install 'scenerec[gpu]')")
        return 0

    from scenerec.llm import make_backend
    from scenerec.models import Evidence, HistoryEntry, Item, Recommendation, UserHistory
    from scenerec.rerank.reranker import Reranker, RerankRequest
    from scenerec.settings import LLMSettings

    failures: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="gpu-llm-"))
    started = time.perf_counter()
    folder = build_model(work / "tiny-llama")
    build_s = time.perf_counter() - started
    settings = LLMSettings(
        backend="vllm",
        model=str(folder),
        rerank_weight=0.3,
        use_profile=True,
        max_tokens=64,
        options={"gpu_memory_utilization": 0.3, "max_model_len": 2048},
    )
    backend = make_backend(settings)
    started = time.perf_counter()
    backend.load()  # type: ignore[attr-defined]
    load_s = time.perf_counter() - started
    print(
        f"vllm {vllm.__version__}, {torch.cuda.get_device_name(0)}; model built in {build_s:.1f} s, "
        f"engine up in {load_s:.1f} s"
    )

    # 1. schema-constrained answers always parse (a limit that covers the longest answer)
    schema = {
        "type": "object",
        "properties": {
            "because": {"enum": ["h1", "h2"]},
            "reason": {"type": "string", "minLength": 5, "maxLength": 40},
        },
        "required": ["because", "reason"],
        "additionalProperties": False,
    }
    conversations = [[{"role": "user", "content": f"why item {i}?"}] for i in range(64)]
    answers = backend.generate_batch(conversations, schemas=[schema] * 64, max_tokens=128)
    bad = 0
    for answer in answers:
        try:
            value = json.loads(answer)
            bad += value["because"] not in ("h1", "h2") or not 5 <= len(value["reason"]) <= 40
        except (json.JSONDecodeError, KeyError, TypeError):
            bad += 1
    print(f"structured outputs: {64 - bad}/64 answers parse against the schema")
    if bad:
        failures.append(f"{bad} structured answers did not parse")

    # 2. batch rerank + explain for many users
    rng = random.Random(1)
    users = 128
    requests = []
    for u in range(users):
        history = [
            HistoryEntry(item_id=f"a{u}-{i}", scene="arts", title=" ".join(rng.sample(WORDS, 4)), position=i)
            for i in range(8)
        ]
        cands = [
            Recommendation(
                item_id=f"o{j}",
                title=" ".join(rng.sample(WORDS, 5)),
                scene="office",
                score=1 / (60 + j),
                evidence=[
                    Evidence(
                        item_id=history[j % 8].item_id,
                        title=history[j % 8].title,
                        scene="arts",
                        similarity=0.5,
                    )
                ],
            )
            for j in range(20)
        ]
        items = {
            c.item_id: Item(item_id=c.item_id, scene="office", title=c.title, text="office supplies")
            for c in cands
        }
        requests.append(
            RerankRequest(
                subject=f"u{u}",
                history=UserHistory(user_id=f"u{u}", entries=history),
                scene="office",
                candidates=cands,
                k=5,
                items=items,
            )
        )
    backend.stats.update(calls=0, prompt_tokens=0, generated_tokens=0, seconds=0.0)
    started = time.perf_counter()
    results = Reranker(backend, settings).rerank_many(requests)
    seconds = time.perf_counter() - started
    total = results[0].counters
    for result in results[1:]:
        total = total.merge(result.counters)
    for req, result in zip(requests, results):
        ids = [r.item_id for r in result.recommendations]
        if len(ids) != 5 or len(set(ids)) != 5 or not all(r.explanation for r in result.recommendations):
            failures.append(f"invalid list for {req.subject}: {ids}")
            break
    prompts = users * (20 + 1) + total.explanation_calls  # label prompts + profiles + explanations
    stats = backend.stats
    print(
        f"rerank_many: {users} users x 20 candidates in {seconds:.2f} s: {prompts / seconds:.0f} prompts/s, "
        f"{stats['generated_tokens'] / max(stats['seconds'], 1e-9):.0f} generated tokens/s "
        f"({int(stats['prompt_tokens'])} prompt tokens, {int(stats['generated_tokens'])} generated)"
    )
    print("counters:", json.dumps(total.nonzero()))
    if total.explanation_parse_failures:
        print(
            f"note: {total.explanation_parse_failures} explanation answers were cut off by the token limit "
            "(a random model fills every string to its maxLength)"
        )
    out = Path(os.environ.get("OUT", "benchmarks/results/llm"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_llm_check.json").write_text(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(0),
                "vllm": vllm.__version__,
                "load_s": load_s,
                "users": users,
                "seconds": seconds,
                "prompts_per_s": prompts / seconds,
                "generated_tokens_per_s": stats["generated_tokens"] / max(stats["seconds"], 1e-9),
                "structured_parse_failures": bad,
                "counters": total.nonzero(),
            },
            indent=2,
        )
    )
    backend.close()
    if failures:
        print("FAIL gpu_llm_check:", "; ".join(failures))
        return 1
    print("OK gpu_llm_check")
    return 0


if __name__ == "__main__":  # vLLM starts worker processes: keep the guard
    sys.exit(main())
