"""Latency of `recommend` with explanations against the same retrieval without them, in one run.

    flock /tmp/scenerec-cpu.lock nice -n 0 python benchmarks/bench_explanation_latency.py \
        --data-dir DIR --name demo [--users 200] [--label after]

Per request (a stored user and a scene; the data directory's test cases give the users and their
target scenes, else every user x every scene, cycled up to --users requests), interleaved so load
changes hit all three alike:

- `explained`: `Recommender.recommend` as shipped (leave-one-out attribution, typed evidence);
- `nearest`: the same retrieval with the old evidence (each item's nearest history items by cosine);
- `retrieval`: the candidates alone, no evidence.

One warm-up pass over the first requests is not timed. Results go to
benchmarks/results/explanations/latency-<name>.json (appending the --label's entry), with the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def quantiles_ms(xs: list[float]) -> dict[str, float | None]:
    """p50 and p95 in milliseconds."""
    if len(xs) < 2:
        return {"p50": None, "p95": None}
    q = statistics.quantiles(xs, n=20)
    return {"p50": round(1000 * statistics.median(xs), 2), "p95": round(1000 * q[18], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--split", default="test")
    parser.add_argument("--label", default="current", help="which code this run measured (before/after)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "explanations")
    args = parser.parse_args()

    from machine import machine

    import scenerec
    from scenerec.recommend.recommender import Recommender
    from scenerec.recommend.retrieval import with_nearest_evidence

    rec = Recommender.open(args.data_dir)
    cases = rec.items.cases(args.split)
    if cases:
        requests = list(dict.fromkeys((c.user_id, c.target_scene) for c in cases))
    else:
        requests = [(u, s) for u in rec.items.users() for s in rec.items.scenes()]
    requests = [requests[i % len(requests)] for i in range(args.users)]
    k = 10
    n_evidence = rec.settings.retrieval.evidence_items

    def explained(user: str, scene: str) -> None:
        rec.recommend(user, scene, k)

    def nearest(user: str, scene: str) -> None:
        history = rec.history(user)
        candidates = rec.candidates([history], scene, k, [set(history.item_ids)])[0]
        ids = [c.item_id for c in candidates]
        with_nearest_evidence(candidates, history, rec.item_vectors(ids), rec.item_vectors(history.item_ids),
                              rec.items.get_items(ids), scene, n_evidence)

    def retrieval(user: str, scene: str) -> None:
        history = rec.history(user)
        rec.candidates([history], scene, k, [set(history.item_ids)])

    ways = {"explained": explained, "nearest": nearest, "retrieval": retrieval}
    for user, scene in requests[:10]:  # warm: indexes, the interaction matrix, the model
        for way in ways.values():
            way(user, scene)
    times: dict[str, list[float]] = {name: [] for name in ways}
    started = time.perf_counter()
    for user, scene in requests:
        for name, way in ways.items():
            t = time.perf_counter()
            way(user, scene)
            times[name].append(time.perf_counter() - t)
    transfer = rec.transfer
    entry = {
        "label": args.label,
        "machine": machine(),
        "data_dir": str(args.data_dir),
        "code": str(Path(scenerec.__file__).parent),
        "requests": len(requests),
        "distinct_requests": len(set(requests)),
        "method": rec.recommend(*requests[0], k)[0].method,
        "transfer_model": transfer is not None,
        "seconds": round(time.perf_counter() - started, 1),
        "latency_ms": {name: quantiles_ms(xs) for name, xs in times.items()},
        "added_by_explanations_p50_ms": round(
            1000 * (statistics.median(times["explained"]) - statistics.median(times["retrieval"])), 2
        ),
    }
    print(json.dumps(entry["latency_ms"]), entry["method"], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"latency-{args.name}.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    runs = [r for r in runs if r.get("label") != args.label] + [entry]
    path.write_text(json.dumps(runs, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
