"""The data directory a benchmark runs on: the one given, or its catalog ingested once (benchmarks import
this as a sibling module)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CATALOG = HERE.parent.parent / "shared" / "data" / "amazon-arts-office"


def bench_data_dir(data_dir: Path | None, catalog: Path) -> tuple[Path | None, float | None]:
    """(data directory, seconds its ingest took here or None); (None, None) after printing why not.

    Without `data_dir` the catalog is ingested once into benchmarks/out/<catalog name>-data.
    """
    from scenerec.paths import DataPaths
    from scenerec.settings import load_settings
    from scenerec.stores.ingest import ingest_catalog

    if data_dir is not None:
        if not DataPaths(data_dir).catalog_db.exists():
            print(f"no ingested catalog in {data_dir}", file=sys.stderr)
            return None, None
        return data_dir, None
    if not catalog.is_dir():
        print(
            f"the benchmark catalog {catalog} is absent (../shared/data is not part of the project); "
            "pass --data-dir or --catalog",
            file=sys.stderr,
        )
        return None, None
    data_dir = HERE / "out" / f"{catalog.name}-data"
    if DataPaths(data_dir).catalog_db.exists():
        return data_dir, None
    print(f"ingesting {catalog} into {data_dir} (once) …", file=sys.stderr)
    started = time.perf_counter()
    ingest_catalog(catalog, load_settings(data_dir=data_dir))
    return data_dir, round(time.perf_counter() - started, 1)
