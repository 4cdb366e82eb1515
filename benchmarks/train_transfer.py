"""Train the transfer model on a real cross-scene catalog, then evaluate it against the baselines.

    python benchmarks/train_transfer.py --data-dir /work/cache/ao-data      # an ingested data directory
    python benchmarks/train_transfer.py                                     # ingests ../shared/data/amazon-arts-office
    python benchmarks/train_transfer.py --data-dir DIR --skip-training      # evaluate the saved checkpoint
    python benchmarks/train_transfer.py --data-dir DIR --reship             # choose what ships again, evaluate

Writes into benchmarks/results/transfer/ (or --out): training.json (wall time, device, threads, valid
metrics per epoch), report.json / report.md / report.png (the harness: every method, both settings,
both protocols, test split), summary.md (transfer vs the best baseline per scene and setting).
The checkpoint is saved in the data directory (`checkpoints/transfer.pt`), as `scenerec train` does.
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

TARGET_RATIO = 1.15
CHALLENGERS = ("transfer", "fused-transfer", "shipped")


def summary(report, protocol: str = "full") -> tuple[str, dict]:
    """Markdown table: per setting and scene, transfer's NDCG@10, the best baseline's, and the paired
    ratio the harness computed (`report.comparisons`)."""
    lines = [
        f"## transfer vs the best baseline: NDCG@10, {report.split} split, protocol `{protocol}`",
        "",
        (
            "| setting | method | scene | NDCG@10 | best baseline | baseline NDCG@10 | ratio (paired 95% CI) "
            "| target ×1.15 met |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    paired_by_cell = {
        (c.setting, c.method, c.scene): c for c in report.comparisons if c.protocol == protocol
    }
    numbers = {}
    for setting, ours_name in [(s, m) for s in report.settings for m in CHALLENGERS]:
        if ours_name not in report.methods:
            continue
        transfer = report.result(ours_name, setting, protocol)
        for scene in [s for s in transfer.scenes if s != "overall"] + ["overall"]:
            ours = transfer.scenes[scene].metrics["ndcg@10"]
            paired = paired_by_cell[(setting, ours_name, scene)]
            best = report.result(paired.baseline, setting, protocol).scenes[scene].metrics["ndcg@10"]
            met = "yes" if paired.ratio >= TARGET_RATIO else "**no**"
            lines.append(
                f"| {setting} | {ours_name} | {scene} | {ours.mean:.4f} ({ours.low:.4f}–{ours.high:.4f}) | "
                f"{paired.baseline} | {best.mean:.4f} ({best.low:.4f}–{best.high:.4f}) | {paired.ratio:.2f} "
                f"({paired.low:.2f}–{paired.high:.2f}) | {met} |"
            )
            numbers[f"{setting}/{ours_name}/{scene}"] = {
                ours_name: ours.mean,
                "best_baseline": paired.baseline,
                "baseline": best.mean,
                "ratio": paired.ratio,
                "ratio_low": paired.low,
                "ratio_high": paired.high,
            }
    return "\n".join(lines) + "\n", numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, help="An ingested scenerec data directory.")
    parser.add_argument(
        "--catalog", type=Path, default=DEFAULT_CATALOG, help="Catalog to ingest without --data-dir."
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "transfer")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads (the target machine has 2)."
    )
    parser.add_argument("--max-minutes", type=float, help="Training budget (default: settings).")
    parser.add_argument("--epochs", type=int, help="Most epochs (default: settings).")
    parser.add_argument("--skip-training", action="store_true", help="Evaluate the existing checkpoint.")
    parser.add_argument(
        "--reship", action="store_true",
        help="With --skip-training implied: choose what ships on valid again for the saved model "
        "(weights unchanged), save, evaluate.",
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    args.skip_training = args.skip_training or args.reship

    import torch

    torch.set_num_threads(args.threads)
    from scenerec.evaluation import BASELINES
    from scenerec.evaluation.harness import evaluate
    from scenerec.evaluation.methods import EvalData
    from scenerec.evaluation.report import write_report
    from scenerec.evaluation.tuning import reship, train_and_save
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings

    data_dir, _ = bench_data_dir(args.data_dir, args.catalog)
    if data_dir is None:
        return 2

    settings = load_settings(data_dir=data_dir)
    overrides = {"max_minutes": args.max_minutes, "max_epochs": args.epochs}
    transfer = settings.transfer.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    args.out.mkdir(parents=True, exist_ok=True)
    run: dict = {
        "command": "python benchmarks/train_transfer.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "data_dir": str(data_dir),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "settings": transfer.model_dump(mode="json"),
    }
    with Recommender.open(settings=settings) as rec:
        if not args.skip_training:

            def progress(stage: str, done: int, total: int, info: dict) -> None:
                if stage == "valid":
                    shown = {k: round(v, 4) for k, v in info.items() if "ndcg10" in k and k != "ndcg10"}
                    config = f"[{info['configuration']}] " if "configuration" in info else ""
                    print(f"{config}epoch {done}: {shown}", file=sys.stderr, flush=True)

            started = time.perf_counter()
            result = train_and_save(rec, transfer, progress=progress)
            run["training"] = result.model_dump(mode="json")
            run["training_wall_seconds"] = round(time.perf_counter() - started, 1)
            print(
                f"trained in {result.seconds:.0f} s ({result.steps} steps, best epoch {result.best_epoch}, "
                f"{result.stopped}); valid {result.valid}; configuration {result.configuration}",
                file=sys.stderr,
            )
            (args.out / "training.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
        if args.reship:
            reshipped = reship(rec)
            run["reshipped"] = {"shipped_lines": reshipped.shipped_lines, "choice_seconds": reshipped.choice_seconds}
            print("\n".join(reshipped.shipped_lines), file=sys.stderr)
        from scenerec.evaluation.transfer_methods import FusedTransferMethod
        from scenerec.evaluation.tuning import choose_lexical_weight
        from scenerec.transfer.checkpoint import checkpoint_path, read_checkpoint
        from scenerec.transfer.loading import load_scorer

        checkpoint = checkpoint_path(rec.paths.root)
        chosen = read_checkpoint(checkpoint).get("metrics", {}).get("transfer_lexical_weight")
        if chosen is None:  # a checkpoint from before `train` chose it: choose it the same way now
            chosen, tried = choose_lexical_weight(rec, load_scorer(rec).model)
            run["lexical_weight_valid_ndcg10"] = tried
        run["transfer_lexical_weight"] = chosen
        run["shipped"] = read_checkpoint(checkpoint).get("metrics", {}).get("shipped")
        print(f"BM25 weight in the fusion (chosen on valid): {chosen}", file=sys.stderr)
        started = time.perf_counter()
        report = evaluate(
            EvalData.from_recommender(rec, "test"), [*BASELINES, "transfer", FusedTransferMethod(lexical_weight=chosen), "shipped"], split="test",
            n_bootstrap=args.bootstrap, progress=True,
        )
        run["evaluate_seconds"] = round(time.perf_counter() - started, 1)
    write_report(report, args.out, title="scenerec evaluation: transfer vs baselines")
    parts, numbers = [], {}
    for protocol in report.protocols:
        text, nums = summary(report, protocol)
        parts.append(text)
        numbers[protocol] = nums
    (args.out / "summary.md").write_text("\n".join(parts), encoding="utf-8")
    run["summary"] = numbers
    if report.skipped:
        run["skipped"] = report.skipped
    name = "training.json" if not args.skip_training else "evaluation.json"
    (args.out / name).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
