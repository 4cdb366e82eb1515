"""NDCG@10 of one trained transfer checkpoint with each encoder backend's item vectors, paired against torch.

    nice -n 19 python benchmarks/backend_quality.py torch=DIR onnx=DIR onnx-int8=DIR openvino=DIR

Each DIR is a copy of the same ingested data directory (the same catalog and transfer checkpoint),
re-ingested with `embedding.backend` set to that backend, so it holds that backend's vectors. Every
directory is evaluated by the project's harness (`evaluation.harness.evaluate`, test split, full and
sampled protocols, mixed and cold settings) with the same seed; the per-case values are then paired
with the first backend's (torch) on the same cases: the ratio of means (`paired_ratio_ci`) and the
mean difference, both with a bootstrap over users (cases of one user resampled together).
Writes benchmarks/results/scale/ndcg-backends.{json,md} (`--name` to change).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import machine

METHODS = ("transfer", "dense")


def evaluate_dir(backend: str, data_dir: Path, split: str, seed: int, n_bootstrap: int) -> tuple:
    """The harness's report for one backend's directory, and its vector model name."""
    from scenerec.evaluation.harness import evaluate
    from scenerec.evaluation.methods import EvalData
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings

    settings = load_settings(data_dir=data_dir, embedding={"backend": backend, "show_progress": False})
    with Recommender.open(settings=settings) as rec:
        vector_model = rec.items.manifest().get("vector_model")
        data = EvalData.from_recommender(rec, split)
    report = evaluate(data, list(METHODS), split=split, seed=seed, n_bootstrap=n_bootstrap)
    return report, vector_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="backend=DATA_DIR, the reference (torch) first")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--name", default="ndcg-backends", help="result file name (without suffix)")
    args = parser.parse_args()
    from scenerec.evaluation.metrics import bootstrap_ci, paired_ratio_ci

    pairs = [d.split("=", 1) for d in args.dirs]
    result: dict = {"machine": machine(), "split": args.split, "seed": args.seed, "n_bootstrap": args.bootstrap,
                    "methods": list(METHODS), "backends": {}, "paired_vs_reference": []}
    reports = {}
    for backend, folder in pairs:
        started = time.perf_counter()
        report, vector_model = evaluate_dir(backend, Path(folder), args.split, args.seed, args.bootstrap)
        reports[backend] = report
        result["backends"][backend] = {
            "data_dir": folder, "vector_model": vector_model, "seconds": round(time.perf_counter() - started, 1),
            "skipped": report.skipped,
            "ndcg@10": {f"{r.method}/{r.setting}/{r.protocol}": {s: v.metrics["ndcg@10"].model_dump()
                                                              for s, v in r.scenes.items()}
                        for r in report.results},
        }
        print(backend, vector_model, json.dumps(result["backends"][backend]["ndcg@10"]), flush=True)
    reference_name = pairs[0][0]
    reference = reports[reference_name]
    for backend, _ in pairs[1:]:
        ours = reports[backend]
        for r in ours.results:
            theirs = reference.result(r.method, r.setting, r.protocol)
            for scene, (values, users) in r._per_case.items():
                ref_values, ref_users = theirs._per_case[scene]
                assert users == ref_users, "the two runs must score the same cases in the same order"
                a, b = values["ndcg@10"], ref_values["ndcg@10"]
                ratio, low, high = paired_ratio_ci(a, b, users, n_bootstrap=args.bootstrap, seed=args.seed)
                diff, dlow, dhigh = bootstrap_ci(a - b, users, n_bootstrap=args.bootstrap, seed=args.seed)
                ref_ci = theirs.scenes[scene].metrics["ndcg@10"]
                result["paired_vs_reference"].append({
                    "backend": backend, "reference": reference_name, "method": r.method, "setting": r.setting,
                    "protocol": r.protocol, "scene": scene, "n_cases": len(users),
                    "ndcg@10": round(float(a.mean()), 6), "reference_ndcg@10": round(float(b.mean()), 6),
                    "reference_interval": [ref_ci.low, ref_ci.high],
                    "ratio": round(ratio, 6), "ratio_low": round(low, 6), "ratio_high": round(high, 6),
                    "diff": round(diff, 6), "diff_low": round(dlow, 6), "diff_high": round(dhigh, 6),
                    "drop_within_reference_interval": bool(b.mean() - a.mean() <= b.mean() - ref_ci.low),
                    "cases_changed": int((abs(a - b) > 1e-12).sum()),
                })
    target = HERE / "results" / "scale" / f"{args.name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# NDCG@10 per encoder backend (split {args.split}, seed {args.seed}, {args.bootstrap} resamples)", "",
             "Paired with the reference backend on the same cases (bootstrap over users).", "",
             "| backend | method | setting | protocol | scene | NDCG@10 | torch NDCG@10 [95%] | ratio [95%] "
             "| diff [95%] | cases changed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in result["paired_vs_reference"]:
        lines.append(
            f"| {p['backend']} | {p['method']} | {p['setting']} | {p['protocol']} | {p['scene']} | {p['ndcg@10']:.4f} "
            f"| {p['reference_ndcg@10']:.4f} [{p['reference_interval'][0]:.4f}, {p['reference_interval'][1]:.4f}] "
            f"| {p['ratio']:.4f} [{p['ratio_low']:.4f}, {p['ratio_high']:.4f}] "
            f"| {p['diff']:+.4f} [{p['diff_low']:+.4f}, {p['diff_high']:+.4f}] | {p['cases_changed']} / {p['n_cases']} |"
        )
    (target.with_suffix(".md")).write_text("\n".join(lines) + "\n")
    print(f"wrote {target} and {target.with_suffix('.md')}")


if __name__ == "__main__":
    main()
