"""A second shape of catalog, derived from Arts–Office: office electronics split off as a third scene.

    python benchmarks/three_scenes.py                          # encodes the 38k texts once (~5 min)
    python benchmarks/three_scenes.py --reuse-embeddings DIR   # copy DIR/embeddings.sqlite first

The transfer issue asks that the same code run unchanged on other catalogs. This is not an independent
catalog (same users, same items), but it changes what a tuned pipeline could silently depend on: three
scenes instead of two, one of them small (1,930 items, 65 test and 48 valid cases), and a scene name
with a dash.
It runs the commands a user would, each as its own process: `ingest`, `train`, `eval --split test`,
`score --all` and `recommend`, and writes run.json (wall time of each) and the evaluation report into
benchmarks/results/three-scenes/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench_data import DEFAULT_CATALOG, HERE

THIRD_SCENE = "office-electronics"
THIRD_SCENE_TEXT = "office products office electronics"  # the category path that moves an item


def derive(source: Path, out: Path) -> dict[str, int]:
    """Write the three-scene catalog into `out`; return the number of items and cases per scene."""
    out.mkdir(parents=True, exist_ok=True)
    scene_of: dict[str, str] = {}
    with (
        open(source / "items.jsonl", encoding="utf-8") as src,
        open(out / "items.jsonl", "w", encoding="utf-8") as dst,
    ):
        for line in src:
            item = json.loads(line)
            if item["scene"] == "office" and item["text"].startswith(THIRD_SCENE_TEXT):
                item["scene"] = THIRD_SCENE
            scene_of[item["item_id"]] = item["scene"]
            dst.write(json.dumps(item) + "\n")
    with (
        open(source / "interactions.csv", newline="", encoding="utf-8") as src,
        open(out / "interactions.csv", "w", newline="", encoding="utf-8") as dst,
    ):
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        for row in reader:
            writer.writerow({**row, "scene": scene_of[row["item_id"]]})
    counts = Counter(f"items/{scene}" for scene in scene_of.values())
    with (
        open(source / "cases.jsonl", encoding="utf-8") as src,
        open(out / "cases.jsonl", "w", encoding="utf-8") as dst,
    ):
        for line in src:
            case = json.loads(line)
            case["target_scene"] = scene_of[case["target_item"]]
            counts[f"cases/{case['split']}/{case['target_scene']}"] += 1
            dst.write(json.dumps(case) + "\n")
    return dict(sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument(
        "--reuse-embeddings", type=Path, help="A data directory whose embedding cache to copy."
    )
    parser.add_argument("--max-minutes", type=float, default=8.0, help="Training budget.")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "three-scenes")
    args = parser.parse_args(argv)
    if not args.catalog.is_dir():
        print(
            f"the catalog {args.catalog} is absent (../shared/data is not part of the project)",
            file=sys.stderr,
        )
        return 2

    work = HERE / "out" / "three-scenes"
    shutil.rmtree(work, ignore_errors=True)
    catalog, data_dir = work / "catalog", work / "data"
    run: dict = {"counts": derive(args.catalog, catalog), "steps": {}}
    data_dir.mkdir(parents=True)
    if args.reuse_embeddings is not None:
        shutil.copy2(args.reuse_embeddings / "embeddings.sqlite", data_dir / "embeddings.sqlite")
        run["embeddings_reused_from"] = str(args.reuse_embeddings)
    env = {**os.environ, "SCENEREC_DATA_DIR": str(data_dir)}
    user = next(
        c["user_id"]
        for c in map(json.loads, (catalog / "cases.jsonl").read_text(encoding="utf-8").splitlines())
        if c["split"] == "test" and c["target_scene"] == THIRD_SCENE
    )
    steps = {
        "ingest": ["ingest", str(catalog)],
        "train": ["train", "--max-minutes", str(args.max_minutes), "--no-progress"],
        "eval": ["eval", "--split", "test", "--out", str(args.out)],
        "score": ["score", "--scene", THIRD_SCENE, "--all", "-k", "20", "--out", str(work / "scores.csv")],
        "recommend": ["recommend", "--user", user, "--scene", THIRD_SCENE, "-k", "5"],
    }
    for name, command in steps.items():
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "scenerec", *command], env=env, capture_output=True, text=True, check=False
        )
        run["steps"][name] = {
            "command": "scenerec " + " ".join(command),
            "seconds": round(time.perf_counter() - started, 1),
            "exit": done.returncode,
            "last_lines": (done.stdout.strip().splitlines() or [""])[-12:] if name != "eval" else [],
        }
        print(f"{name}: exit {done.returncode} in {run['steps'][name]['seconds']} s", file=sys.stderr)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            break
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    return max(step["exit"] for step in run["steps"].values())


if __name__ == "__main__":
    sys.exit(main())
