"""Run the evaluation harness on a real cross-scene catalog and write benchmarks/results/<name>/.

    python benchmarks/run_eval.py                              # ../shared/data/amazon-arts-office
    python benchmarks/run_eval.py --data-dir /path/to/data     # an already ingested data directory
    python benchmarks/run_eval.py --catalog DIR --name other   # another catalog in the same format

Without --data-dir the catalog is ingested (once) into benchmarks/out/<catalog name>-data. The results
folder gets report.json, report.md and report.png, plus run.json (command, timings, machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from bench_data import DEFAULT_CATALOG, HERE, bench_data_dir

DEFAULT_METHODS = "popularity,cooccurrence,bm25,dense,fused,transfer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, help="An ingested scenerec data directory.")
    parser.add_argument(
        "--catalog", type=Path, default=DEFAULT_CATALOG, help="Catalog to ingest when no --data-dir."
    )
    parser.add_argument("--name", default="baselines", help="Results folder name under benchmarks/results/.")
    parser.add_argument("--out", type=Path, help="Results folder (default: benchmarks/results/<name>).")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--split", default="test")
    parser.add_argument("--setting", default="mixed,cold")
    parser.add_argument("--protocol", default="full,sampled")
    parser.add_argument("--max-cases", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)

    from scenerec.evaluation.harness import evaluate
    from scenerec.evaluation.methods import EvalData
    from scenerec.evaluation.report import write_report
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings

    started = time.perf_counter()
    data_dir, ingest_seconds = bench_data_dir(args.data_dir, args.catalog)
    if data_dir is None:
        return 2

    settings = load_settings(data_dir=data_dir)
    with Recommender.open(settings=settings) as rec:
        report = evaluate(
            EvalData.from_recommender(rec, args.split), [m for m in args.methods.split(",") if m], split=args.split,
            settings=args.setting.split(","), protocols=args.protocol.split(","), seed=args.seed,
            n_bootstrap=args.bootstrap, max_cases=args.max_cases, progress=True,
        )
    out = args.out or HERE / "results" / args.name
    title = f"scenerec evaluation: {args.name} on {data_dir.name} ({args.split})"
    paths = write_report(report, out, title=title)
    run = {
        "command": " ".join(
            ["python", "benchmarks/run_eval.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "data_dir": str(data_dir),
        "ingest_seconds": ingest_seconds,
        "evaluate_seconds": report.seconds,
        "total_seconds": round(time.perf_counter() - started, 1),
        "fit_seconds": report.fit_seconds,
        "score_seconds": {
            f"{r.method}/{r.setting}": r.seconds for r in report.results if r.protocol == report.protocols[0]
        },
        "skipped": report.skipped,
        "machine": {
            "python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()
        },
    }
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    print(paths["markdown"].read_text(encoding="utf-8"))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
