"""Where the transfer model's cold-setting NDCG comes from: targets grouped by how popular they are.

    python benchmarks/transfer_by_popularity.py --data-dir DIR     # a data directory with a checkpoint

For each split (valid, test) and target scene, in the cold setting (only the other scenes' history) and
the full protocol, the cases are grouped by the target's rank in the scene's popularity list, and for
each group the script counts the targets that popularity and the transfer model put in their top 10;
two oracle mixtures of the two methods give reference points for what mixing them could reach. Writes benchmarks/results/transfer/by_popularity.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from bench_data import HERE

GROUPS = ((1, 10), (11, 50), (51, 200), (201, 1000), (1001, None))


def masked(scores: np.ndarray, cases: list) -> np.ndarray:
    """`scores` with every case's history at -inf (the harness's exclusion)."""
    scores = scores.copy()
    for row, pc in enumerate(cases):
        scores[row, pc.excluded] = -np.inf
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="Ingested data directory with a checkpoint."
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "transfer")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from scenerec.evaluation.harness import prepare_cases
    from scenerec.evaluation.methods import EvalData, PopularityMethod
    from scenerec.evaluation.metrics import ndcg, target_positions
    from scenerec.evaluation.transfer_methods import TransferMethod
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import load_settings

    rows, lines, oracles = [], [], []
    with Recommender.open(settings=load_settings(data_dir=args.data_dir)) as rec:
        for split in ("valid", "test"):
            data = EvalData.from_recommender(rec, split)
            popularity, transfer = PopularityMethod(), TransferMethod()
            popularity.fit(data)
            transfer.fit(data)
            for scene in data.scenes:
                cases = [
                    pc
                    for pc in prepare_cases(data, [c for c in data.cases if c.target_scene == scene], 0, 0)
                    if pc.target_col >= 0
                ]
                histories = [pc.cold for pc in cases]
                counts = data.scene_popularity[scene]
                order = np.argsort(-counts, kind="stable")
                pop_rank = np.empty(len(order), dtype=np.int64)
                pop_rank[order] = np.arange(1, len(order) + 1)
                target_rank = np.array([pop_rank[pc.target_col] for pc in cases])
                ranks, gains = {}, {}
                for name, method in (("popularity", popularity), ("transfer", transfer)):
                    above, tied, rankable = target_positions(
                        masked(method.score(histories, scene), cases),
                        np.array([pc.target_col for pc in cases]),
                    )
                    # the mean rank under a uniform tie-break; a repeat target (in the history) is a miss
                    ranks[name] = np.where(rankable, 1 + above + tied / 2, np.inf)
                    gains[name] = ndcg(above, tied, rankable, 10)
                best_seller = target_rank <= 10
                oracles.append(
                    {
                        "split": split,
                        "scene": scene,
                        "cases": len(cases),
                        "popularity": float(gains["popularity"].mean()),
                        "transfer": float(gains["transfer"].mean()),
                        "best_sellers_from_popularity": float(
                            np.where(best_seller, gains["popularity"], gains["transfer"]).mean()
                        ),
                        "better_of_the_two": float(np.maximum(gains["popularity"], gains["transfer"]).mean()),
                    }
                )
                for low, high in GROUPS:
                    group = (target_rank >= low) & (target_rank <= (high or len(order)))
                    row = {
                        "split": split,
                        "scene": scene,
                        "popularity_ranks": f"{low}–{high or ''}",
                        "cases": int(group.sum()),
                        **{f"{m}_hits@10": int((r[group] <= 10).sum()) for m, r in ranks.items()},
                        **{
                            f"{m}_median_rank": float(np.median(r[group])) if group.any() else None
                            for m, r in ranks.items()
                        },
                    }
                    rows.append(row)
                    lines.append(
                        f"| {split} | {scene} | {row['popularity_ranks']} | {row['cases']} | "
                        f"{row['popularity_hits@10']} | {row['transfer_hits@10']} | "
                        f"{row['popularity_median_rank'] or 0:.0f} | {row['transfer_median_rank'] or 0:.0f} |"
                    )
    header = [
        "# Cold setting: hits by the target's popularity rank",
        "",
        f"Data directory `{args.data_dir.name}`; full protocol, cold setting (only the other scenes' history);",
        "every history item excluded; ranks under a uniform tie-break. `benchmarks/transfer_by_popularity.py`.",
        "",
        (
            "| split | scene | target's popularity rank | cases | popularity hits@10 | transfer hits@10 "
            "| popularity median rank | transfer median rank |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        "",
        "## Oracle reference points (NDCG@10; they know the target, so no method can use them)",
        "",
        (
            "`best-sellers from popularity`: popularity's result where the target is one of the scene's ten "
            "most popular items, the model's elsewhere; `better of the two`: per case, the better of the two."
        ),
        "",
        "| split | scene | cases | popularity | transfer | best-sellers from popularity | better of the two |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in oracles:
        ratio = {
            k: o[k] / o["popularity"]
            for k in ("transfer", "best_sellers_from_popularity", "better_of_the_two")
        }
        lines.append(
            f"| {o['split']} | {o['scene']} | {o['cases']} | {o['popularity']:.4f} | "
            f"{o['transfer']:.4f} ({ratio['transfer']:.2f}×) | "
            f"{o['best_sellers_from_popularity']:.4f} ({ratio['best_sellers_from_popularity']:.2f}×) | "
            f"{o['better_of_the_two']:.4f} ({ratio['better_of_the_two']:.2f}×) |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "by_popularity.md").write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    (args.out / "by_popularity.json").write_text(
        json.dumps({"groups": rows, "oracles": oracles}, indent=2) + "\n", encoding="utf-8"
    )
    print("\n".join(header + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
