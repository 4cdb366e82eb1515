"""Two stress variants of a scene catalog, for checking that what ships does not depend on rich text.

    python benchmarks/stress_variants.py                       # ../shared/data/amazon-arts-office
    python benchmarks/stress_variants.py --catalog DIR --out benchmarks/out/stress

Writes two catalogs in the scene-catalog format beside each other under --out:
  <name>-titles-only/  every item's `text` (category path + brand) removed, titles kept;
  <name>-no-text/      no text at all: the title is the item id, `text` removed.
Interactions and cases are copied unchanged. Then, for each variant:

    scenerec ingest OUT/<variant> --data-dir DIR && python benchmarks/train_transfer.py --data-dir DIR

On the no-text variant the shipped method must be at least co-occurrence (the issue's target).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from bench_data import DEFAULT_CATALOG, HERE

VARIANTS = ("titles-only", "no-text")


def variant_item(item: dict, variant: str) -> dict:
    """One items.jsonl record of `variant`."""
    out = {k: v for k, v in item.items() if k != "text"}
    if variant == "no-text":
        out["title"] = str(item["item_id"])
    return out


def write_variant(catalog: Path, out: Path, variant: str) -> Path:
    """The catalog's `variant` under `out`; returns its folder."""
    target = out / f"{catalog.name}-{variant}"
    target.mkdir(parents=True, exist_ok=True)
    with (catalog / "items.jsonl").open(encoding="utf-8") as src, (target / "items.jsonl").open(
        "w", encoding="utf-8"
    ) as dst:
        for line_no, line in enumerate(src, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{catalog / 'items.jsonl'}:{line_no}: not JSON ({exc})") from exc
            dst.write(json.dumps(variant_item(item, variant), ensure_ascii=False) + "\n")
    for name in ("interactions.csv", "cases.jsonl"):
        shutil.copyfile(catalog / name, target / name)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "stress")
    args = parser.parse_args(argv)
    if not (args.catalog / "items.jsonl").is_file():
        print(f"no catalog at {args.catalog} (../shared/data is not part of the project)", file=sys.stderr)
        return 2
    for variant in VARIANTS:
        print(write_variant(args.catalog, args.out, variant))
    return 0


if __name__ == "__main__":
    sys.exit(main())
