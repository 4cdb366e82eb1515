"""Train RecBole's SASRec (the `sasrec` peer, scenerec/evaluation/peers.py) on a catalog's training
users and evaluate it through our harness beside the baselines: both settings, both protocols, per scene.

    python benchmarks/peer_sasrec.py --data-dir DIR --name amazon-arts-office --max-minutes 15
    python benchmarks/peer_sasrec.py --data-dir DIR --name amazon-arts-office --skip-training

Needs the peers environment (`pip install recbole==1.2.1 'pandas<3'`, torch from .ci/constraints.txt).
The data directory is only read (SQLite opened read-only, stored BM25 indexes loaded, nothing synced or
repaired), so it can be one another process owns. Training rows are every prefix -> next item of the
users without an evaluation case (`tr*`); early stopping reads the valid cases; the test split is
evaluated once, with the epoch chosen on valid.

Writes into benchmarks/results/transfer/peers/<name>/ (or --out): training.json (options, RecBole config,
epochs with valid NDCG@10 and wall time, machine), report.json / report.md / report.png (the harness),
summary.md (SASRec and every baseline, NDCG@10 with intervals, and SASRec over the best baseline, paired).
The checkpoint goes to benchmarks/out/peers/<name>/sasrec.pt (or --checkpoint), not into the data dir.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
from machine import machine

HERE = Path(__file__).resolve().parent


def read_eval_data(data_dir: Path, split: str, settings):  # -> EvalData
    """`EvalData` for `split` from a data directory, read-only (no Recommender: it would sync and
    repair the stores, i.e. write)."""
    from scenerec.evaluation.methods import EvalData, _vector_lookup
    from scenerec.models import Case
    from scenerec.paths import DataPaths
    from scenerec.stores.item_store import read_histories
    from scenerec.stores.lexical_indexes import LexicalIndexes
    from scenerec.stores.scene_index import normalise

    paths = DataPaths(data_dir)
    catalog = sqlite3.connect(f"file:{paths.catalog_db}?mode=ro", uri=True)
    cache = sqlite3.connect(f"file:{paths.embedding_cache_db}?mode=ro", uri=True)
    try:
        model = dict(catalog.execute("SELECT key, value FROM manifest"))["vector_model"]
        rows = catalog.execute(
            "SELECT item_id, scene, title, content_hash FROM items ORDER BY item_id"
        ).fetchall()
        cases = [
            Case(
                case_id=r[0],
                split=r[1],
                user_id=r[2],
                target_scene=r[3],
                target_item=r[4],
                history=json.loads(r[5]),
            )
            for r in catalog.execute(
                "SELECT case_id, split, user_id, target_scene, target_item, history FROM cases ORDER BY case_id"
            )
        ]
        vectors = {
            h: np.frombuffer(blob, dtype=np.float32)
            for h, blob in cache.execute(
                "SELECT content_hash, vector FROM embeddings WHERE model = ?", (model,)
            )
        }
    finally:
        catalog.close()
        cache.close()
    scenes = sorted({r[1] for r in rows})
    scene_item_ids = {s: [r[0] for r in rows if r[1] == s] for s in scenes}
    hashes = {r[0]: r[3] for r in rows}
    missing = [i for i in hashes if hashes[i] not in vectors]
    if missing:
        raise SystemExit(f"{data_dir}: {len(missing)} items have no stored vector, e.g. {missing[:3]}")
    scene_vectors = {
        s: normalise(np.stack([vectors[hashes[i]] for i in ids])) for s, ids in scene_item_ids.items()
    }
    in_split = {c.user_id for c in cases if c.split == split}
    histories = read_histories(paths.catalog_db)
    return EvalData(
        scenes=scenes,
        scene_item_ids=scene_item_ids,
        scene_vectors=scene_vectors,
        vector_of=_vector_lookup(scene_item_ids, scene_vectors),
        item_scene={r[0]: r[1] for r in rows},
        item_title={r[0]: r[2] for r in rows},
        train_histories={u: h for u, h in histories.items() if u not in in_split},
        split=split,
        cases=[c for c in cases if c.split == split],
        retrieval=settings.retrieval,
        lexical_index=LexicalIndexes(paths.lexical_dir).get,
        settings=settings,
        data_dir=None,
    ), {c.user_id for c in cases}


def goal(report, protocol: str = "full", peer: str = "sasrec") -> str:
    """Markdown: `shipped` over the stronger of (best baseline, `peer`) in every cell, and over `peer`
    alone, each a ratio of means with a paired 95% interval (the same cases and resamples)."""
    from scenerec.evaluation import BASELINES

    baselines = [m for m in report.methods if m in BASELINES]
    lines = [
        f"## shipped / max(best baseline, {peer}), NDCG@10, {report.split} split, protocol `{protocol}`",
        "",
        "| setting | scene | strongest other | its NDCG@10 | shipped | ratio (paired 95% CI) "
        f"| shipped / {peer} (paired 95% CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for setting in report.settings:
        for scene in report.result("shipped", setting, protocol).scenes:
            def mean(method: str) -> float:
                return report.result(method, setting, protocol).scenes[scene].metrics["ndcg@10"].mean

            strongest = max([*baselines, peer], key=mean)
            c = report.compare("shipped", strongest, setting, protocol, scene)
            p = report.compare("shipped", peer, setting, protocol, scene)
            lines.append(
                f"| {setting} | {scene} | {strongest} | {mean(strongest):.4f} | {mean('shipped'):.4f} "
                f"| {c.ratio:.2f} ({c.low:.2f}–{c.high:.2f}) | {p.ratio:.2f} ({p.low:.2f}–{p.high:.2f}) |"
            )
    return "\n".join(lines) + "\n"


def summary(report, protocol: str = "full") -> str:
    """Markdown: NDCG@10 (95% CI) of every method per setting and scene; SASRec / best baseline, paired."""
    scenes = [s for s in report.result(report.methods[0], report.settings[0], protocol).scenes]
    lines = [
        f"## NDCG@10, {report.split} split, protocol `{protocol}` (95% bootstrap interval over users)",
        "",
    ]
    lines += ["| setting | method | " + " | ".join(scenes) + " |", "|---|---|" + "---|" * len(scenes)]
    for setting in report.settings:
        for method in report.methods:
            cells = []
            for scene in scenes:
                v = report.result(method, setting, protocol).scenes[scene].metrics["ndcg@10"]
                cells.append(f"{v.mean:.4f} ({v.low:.4f}–{v.high:.4f})")
            lines.append(f"| {setting} | {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### sasrec (and sasrec-at-budget) / best baseline (by NDCG@10 in that cell), "
        f"paired 95% interval, `{protocol}`",
        "",
    ]
    lines += [
        "| peer | setting | scene | best baseline | ratio (paired 95% CI) |",
        "|---|---|---|---|---|",
    ]
    for c in report.comparisons:
        if c.protocol == protocol and c.method.startswith("sasrec"):
            lines.append(
                f"| {c.method} | {c.setting} | {c.scene} | {c.baseline} "
                f"| {c.ratio:.2f} ({c.low:.2f}–{c.high:.2f}) |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="An ingested scenerec data directory.")
    parser.add_argument(
        "--name", required=True, help="Catalog name: results go to results/transfer/peers/NAME."
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads (the target machine has 2)."
    )
    parser.add_argument(
        "--max-minutes", type=float, default=15.0, help="Training budget (valid checks included)."
    )
    parser.add_argument(
        "--snapshot-minutes",
        type=float,
        help="Also evaluate the model as it stood after this much training (`sasrec-at-budget`), "
        "e.g. our own training time, while the run goes on to convergence.",
    )
    parser.add_argument("--max-epochs", type=int, help="Most epochs (default: RecBole's 300).")
    parser.add_argument(
        "--patience", type=int, help="Epochs without a better valid NDCG@10 (default: RecBole's 10)."
    )
    parser.add_argument(
        "--progress",
        type=Path,
        help="Progress state written after every epoch; where it exists, training goes on from it "
        "(convergence on a large catalog takes more than one sitting).",
    )
    parser.add_argument(
        "--warm-start",
        type=Path,
        help="With --progress not yet written: go on from --checkpoint, a finished run's best epoch, "
        "whose training.json this is (weights only: Adam starts afresh).",
    )
    parser.add_argument("--skip-training", action="store_true", help="Evaluate the existing checkpoint.")
    parser.add_argument(
        "--with-shipped",
        action="store_true",
        help="Also evaluate what `recommend` ships (the data directory's transfer checkpoint) in the same "
        "call, and compare it, paired, against max(best baseline, SASRec) in every cell (goal.md).",
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-cases", type=int, help="Evaluate a seeded subset of test cases (smoke runs only)."
    )
    args = parser.parse_args(argv)
    out = args.out or HERE / "results" / "transfer" / "peers" / args.name
    checkpoint = args.checkpoint or HERE / "out" / "peers" / args.name / "sasrec.pt"

    import torch

    torch.set_num_threads(args.threads)
    from scenerec.evaluation import BASELINES
    from scenerec.evaluation.harness import evaluate
    from scenerec.evaluation.peers import (
        SASRecMethod,
        SASRecOptions,
        progress_from_checkpoint,
        read_checkpoint,
        read_progress,
        save_checkpoint,
        train_sasrec,
    )
    from scenerec.evaluation.report import write_report
    from scenerec.settings import load_settings

    settings = load_settings(data_dir=args.data_dir)
    out.mkdir(parents=True, exist_ok=True)
    run: dict = {
        "command": "python benchmarks/peer_sasrec.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data_dir": str(args.data_dir),
        "checkpoint": str(checkpoint),
        "machine": machine(),
    }
    started = time.perf_counter()
    test, case_users = read_eval_data(args.data_dir, "test", settings)
    run["read_seconds"] = round(time.perf_counter() - started, 1)
    if not args.skip_training:
        valid, _ = read_eval_data(args.data_dir, "valid", settings)
        train_users = {u: h for u, h in valid.train_histories.items() if u not in case_users}
        options = SASRecOptions(
            max_minutes=args.max_minutes,
            max_epochs=args.max_epochs,
            patience=args.patience,
            snapshot_minutes=args.snapshot_minutes,
            seed=args.seed,
            threads=args.threads,
        )
        item_ids = sorted(valid.item_scene)

        def progress(record) -> None:
            print(
                f"epoch {record.epoch} ({record.fraction:.0%}): loss {record.loss:.4f}, valid mixed NDCG@10 "
                f"{record.valid_ndcg10}, {record.seconds:.0f} s",
                file=sys.stderr,
                flush=True,
            )

        resume = None
        if args.progress is not None and args.progress.exists():
            resume = read_progress(args.progress)
            run["resumed_from"] = {"progress": str(args.progress), "epoch": resume["epoch"]}
        elif args.warm_start is not None:
            prior = json.loads(args.warm_start.read_text(encoding="utf-8"))
            resume = progress_from_checkpoint(read_checkpoint(checkpoint), prior["training"])
            run["resumed_from"] = {
                "checkpoint": str(checkpoint), "training": str(args.warm_start), "epoch": resume["epoch"],
                "optimizer": "restarted",
            }
        if resume is not None:
            print(f"going on after epoch {resume['epoch']} ({resume['seconds']:.0f} s)", file=sys.stderr)

        def keep(progress_state) -> None:
            save_checkpoint(args.progress, progress_state)

        state, result = train_sasrec(
            train_users, item_ids, options, valid=valid, progress=progress, resume=resume,
            on_epoch=keep if args.progress is not None else None,
        )
        save_checkpoint(checkpoint, state)
        run["options"] = options.model_dump()
        run["training"] = result.model_dump()
        (out / "training.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
        print(
            f"trained {result.seconds:.0f} s, best epoch {result.best_epoch} ({result.stopped})",
            file=sys.stderr,
        )
    else:
        state = read_checkpoint(checkpoint)
    started = time.perf_counter()
    peers = [SASRecMethod(state=state)]
    if "snapshot" in state:
        peers.append(SASRecMethod(state=state["snapshot"], name="sasrec-at-budget"))
    if args.with_shipped:
        from scenerec.evaluation.transfer_methods import ShippedMethod
        from scenerec.transfer.checkpoint import checkpoint_path

        peers.append(ShippedMethod(checkpoint=checkpoint_path(args.data_dir)))
    report = evaluate(
        test,
        [*BASELINES, *peers],
        split="test",
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        max_cases=args.max_cases,
        progress=True,
    )
    run["evaluate_seconds"] = round(time.perf_counter() - started, 1)
    write_report(report, out, title=f"SASRec (RecBole 1.2.1) beside the baselines: {args.name}")
    text = "\n".join(summary(report, p) for p in report.protocols)
    (out / "summary.md").write_text(text, encoding="utf-8")
    if args.with_shipped and "shipped" in report.methods:
        goal_text = goal(report)
        (out / "goal.md").write_text(goal_text, encoding="utf-8")
        text += "\n" + goal_text
    name = "training.json" if not args.skip_training else "evaluation.json"
    (out / name).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
