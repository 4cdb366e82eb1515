"""Derive the demo catalog shipped in `scenerec/catalog/demo/` from the amazon-arts-office data.

Deterministic (seed 0). Picks train, valid and test users (all have history in both scenes), keeps
every item they touch (history and case targets), adds random items of each scene up to
`--items-per-scene`, and writes the scene-catalog format plus a README with the counts.

    python benchmarks/make_demo_catalog.py [--source ../shared/data/amazon-arts-office] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "amazon-arts-office"
DEFAULT_OUT = ROOT / "scenerec" / "catalog" / "demo"
SEED = 0

# Users with short histories keep the set of touched items small enough that the random fill
# (what makes retrieval non-trivial) is a real share of each scene.
MAX_TRAIN_HISTORY = 14
MAX_HELD_OUT_HISTORY = 12


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train-users", type=int, default=200)
    parser.add_argument("--valid-users", type=int, default=30)
    parser.add_argument("--test-users", type=int, default=30)
    parser.add_argument("--items-per-scene", type=int, default=1500)
    args = parser.parse_args(argv)
    if not (args.source / "items.jsonl").is_file():
        print(f"source data not found at {args.source}", file=sys.stderr)
        return 1
    rng = random.Random(SEED)

    items: dict[str, dict] = {}
    with (args.source / "items.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            items[record["item_id"]] = record
    history: dict[str, list[dict]] = defaultdict(list)
    with (args.source / "interactions.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            history[row["user_id"]].append(row)
    cases_by_user: dict[str, list[dict]] = defaultdict(list)
    with (args.source / "cases.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            case = json.loads(line)
            cases_by_user[case["user_id"]].append(case)

    def pick(prefix: str, count: int, max_history: int) -> list[str]:
        eligible = sorted(
            user
            for user, rows in history.items()
            if user.startswith(prefix)
            and len(rows) <= max_history
            and len({row["scene"] for row in rows}) == 2
            and (prefix == "tr" or len(cases_by_user[user]) == 2)
        )
        return sorted(rng.sample(eligible, count))

    train = pick("tr", args.train_users, MAX_TRAIN_HISTORY)
    valid = pick("va", args.valid_users, MAX_HELD_OUT_HISTORY)
    test = pick("te", args.test_users, MAX_HELD_OUT_HISTORY)
    users = train + valid + test
    cases = [case for user in valid + test for case in cases_by_user[user]]

    touched = {row["item_id"] for user in users for row in history[user]}
    for case in cases:
        touched.add(case["target_item"])
        touched.update(case["history"])
    chosen = set(touched)
    for scene in sorted({record["scene"] for record in items.values()}):
        have = sum(1 for item_id in chosen if items[item_id]["scene"] == scene)
        pool = sorted(i for i, r in items.items() if r["scene"] == scene and i not in chosen)
        chosen.update(rng.sample(pool, max(0, args.items_per_scene - have)))

    def source_order(item_id: str) -> tuple[str, int]:
        scene, _, number = item_id.rpartition("-")
        return scene, int(number) if number.isdigit() else -1

    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "items.jsonl").open("w", encoding="utf-8", newline="\n") as handle:
        for item_id in sorted(chosen, key=source_order):
            record = items[item_id]
            keys = ("item_id", "scene", "title", "text")
            handle.write(json.dumps({k: record[k] for k in keys}, ensure_ascii=False) + "\n")
    rows = [row for user in users for row in history[user]]
    with (args.out / "interactions.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["user_id", "item_id", "scene", "position"])
        for row in rows:
            writer.writerow([row["user_id"], row["item_id"], row["scene"], row["position"]])
    with (args.out / "cases.jsonl").open("w", encoding="utf-8", newline="\n") as handle:
        for case in cases:
            handle.write(json.dumps(case, ensure_ascii=False) + "\n")

    per_scene: dict[str, int] = defaultdict(int)
    for item_id in chosen:
        per_scene[items[item_id]["scene"]] += 1
    touched_per_scene: dict[str, int] = defaultdict(int)
    for item_id in touched:
        touched_per_scene[items[item_id]["scene"]] += 1
    rows_per_scene: dict[str, int] = defaultdict(int)
    for row in rows:
        rows_per_scene[row["scene"]] += 1
    counts = {
        "users": {"train": len(train), "valid": len(valid), "test": len(test)},
        "items": dict(sorted(per_scene.items())),
        "touched_items": dict(sorted(touched_per_scene.items())),
        "interactions": len(rows),
        "interactions_per_scene": dict(sorted(rows_per_scene.items())),
        "cases": {
            "valid": sum(c["split"] == "valid" for c in cases),
            "test": sum(c["split"] == "test" for c in cases),
        },
    }
    (args.out / "README.md").write_text(_readme(counts, args), encoding="utf-8")
    print(json.dumps(counts))
    return 0


def _readme(counts: dict, args: argparse.Namespace) -> str:
    users, items, cases = counts["users"], counts["items"], counts["cases"]
    scene_lines = "\n".join(
        f"| `{scene}` | {items[scene]:,} | {counts['touched_items'][scene]:,} | "
        f"{counts['interactions_per_scene'].get(scene, 0):,} |"
        for scene in items
    )
    return f"""# Demo catalog

A small cross-scene catalog shipped with scenerec so the demo and the tests run without any download.
It is in the scene-catalog format (`items.jsonl`, `interactions.csv`, `cases.jsonl`).

## Where it comes from

Amazon product reviews collected by the McAuley lab (UCSD), as processed for cross-domain sequential
recommendation in the public repository TingJShen/URLLM (folder `DG_Final/AO`): scene `arts` = Arts,
Crafts & Sewing, scene `office` = Office Products. Item text is a lowercased English title, a category
path and a brand. **Research use only**, like the underlying Amazon review data.

## How it was made

`python benchmarks/make_demo_catalog.py` (seed {SEED}, deterministic) from the full
`amazon-arts-office` set (38,396 items, 205,261 interactions, 3,154 cases):

1. pick {users["train"]} train users (`tr*`) at random among those with at most {MAX_TRAIN_HISTORY}
   history items, and {users["valid"]} valid (`va*`) and {users["test"]} test (`te*`) users among
   those with at most {MAX_HELD_OUT_HISTORY}; every user has history in both scenes;
2. keep all their interactions as in the source (train users: full history; valid/test users:
   history without the held-out targets) and both cases of each valid/test user;
3. keep every item they touch (history and case targets), then add items of each scene chosen
   uniformly at random until each scene has about {args.items_per_scene:,} items, so that retrieval
   ranks against many items nobody here touched.

Item ids are the source ids.

## Counts

| scene | items | touched by the chosen users | interactions |
|---|---|---|---|
{scene_lines}

- users: {users["train"]} train, {users["valid"]} valid, {users["test"]} test
  ({sum(users.values())} in all)
- items: {sum(items.values()):,}
- interactions: {counts["interactions"]:,}
- cases: {cases["valid"]} valid + {cases["test"]} test = {cases["valid"] + cases["test"]}
  (two per valid/test user, same history, different next item)

Shorter histories than the full set's (the sample favours users with short histories to keep the
item count small): metrics measured here are a smoke test, not a benchmark result.
"""


if __name__ == "__main__":
    sys.exit(main())
