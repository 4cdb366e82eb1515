"""How much of the transfer model's margin over popularity is the seed: train it with several seeds and
report each seed's NDCG@10 (full ranking, valid and test, per setting and scene) next to popularity's.

    python benchmarks/transfer_seeds.py --data-dir /path/to/ingested-data --seeds 0,1,2

The models are not saved (the data directory's checkpoint is left alone). Metrics use the training
code's validation (`train.evaluate`): the harness's conventions (history excluded, ties at their
expected rank, repeat targets as misses) without its bootstrap. Writes seeds.json and seeds.md into
--out (default benchmarks/results/transfer/).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench_data import DEFAULT_CATALOG, HERE, bench_data_dir
from machine import machine


def popularity(rec, split: str, cases) -> dict[str, float]:
    """The harness's popularity baseline (counts over the users without a case in `split`)."""
    from scenerec.evaluation.methods import EvalData, PopularityMethod
    from scenerec.transfer.train import ndcg_at_10, target_ranks

    data = EvalData.from_recommender(rec, split=split)
    method = PopularityMethod()
    method.fit(data)
    out = {}
    for scene in data.scenes:
        scene_cases = [c for c in cases if c.target_scene == scene]
        scores = method.score([c.history for c in scene_cases], scene)
        value = ndcg_at_10(target_ranks(scores, data.scene_column[scene], scene_cases))
        for setting in ("mixed", "cold"):  # popularity ignores the history: the same in both settings
            out[f"ndcg10_{setting}_{scene}"] = value
    return out


def table(results: dict, split: str, scenes: list[str]) -> list[str]:
    cells = [(setting, scene) for setting in ("mixed", "cold") for scene in scenes]
    lines = [
        f"### {split}",
        "",
        "| run | " + " | ".join(f"{s} {sc}" for s, sc in cells) + " |",
        "|---|" + "---|" * len(cells),
    ]
    pop = results["popularity"][split]
    lines.append("| popularity | " + " | ".join(f"{pop[f'ndcg10_{s}_{sc}']:.4f}" for s, sc in cells) + " |")
    for seed, run in results["seeds"].items():
        row = run[split]
        lines.append(
            f"| seed {seed} | "
            + " | ".join(
                f"{row[f'ndcg10_{s}_{sc}']:.4f} ({row[f'ndcg10_{s}_{sc}'] / pop[f'ndcg10_{s}_{sc}']:.2f}×)"
                for s, sc in cells
            )
            + " |"
        )
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="An ingested scenerec data directory.")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "transfer")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings
    from scenerec.transfer.loading import item_table, training_data
    from scenerec.transfer.scorer import TransferScorer
    from scenerec.transfer.train import evaluate, train_transfer

    data_dir, _ = bench_data_dir(args.data_dir, args.catalog)
    if data_dir is None:
        return 2
    settings = load_settings(data_dir=data_dir)
    results: dict = {
        "command": "python benchmarks/transfer_seeds.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "settings": settings.transfer.model_dump(mode="json"),
        "seeds": {},
    }
    with Recommender.open(settings=settings) as rec:
        table_ = item_table(rec)
        histories, valid = training_data(rec)
        test = rec.items.cases("test")
        results["popularity"] = {"valid": popularity(rec, "valid", valid), "test": popularity(rec, "test", test)}
    for seed in [int(s) for s in args.seeds.split(",")]:
        started = time.perf_counter()
        trained = train_transfer(table_, histories, valid, settings.transfer.model_copy(update={"seed": seed}))
        scorer = TransferScorer(trained.model, table_)
        results["seeds"][str(seed)] = {
            "seconds": round(time.perf_counter() - started, 1),
            "best_epoch": trained.best_epoch,
            "valid": evaluate(scorer, valid),
            "test": evaluate(scorer, test),
        }
        print(f"seed {seed}: {results['seeds'][str(seed)]['test']}", file=sys.stderr, flush=True)
    scenes = table_.scenes
    lines = [
        "## The transfer model across seeds: NDCG@10, full ranking (ratio to popularity)",
        "",
        (
            f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, torch "
            f"{results['machine']['torch']}; command `{results['command']}`."
        ),
        "",
        *table(results, "valid", scenes),
        *table(results, "test", scenes),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seeds.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / "seeds.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
