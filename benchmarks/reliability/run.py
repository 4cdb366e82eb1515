"""Reliability report: ingest and session kills survived, damage cases repaired, concurrent runs.

    python benchmarks/reliability/run.py --catalog /work/shared/data/amazon-arts-office \
        --seed-cache /work/cache/scenerec-bench/ao-data/embeddings.sqlite --demo-data DIR

Prints a markdown table and writes JSON to benchmarks/results/reliability/. The bar is zero lost items
and zero crashes. Damage cases and the concurrency run use the demo catalog (a clean demo data dir
given by --demo-data, or ingested here); the kills use --catalog.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import harness  # noqa: E402
from harness import KillPoint  # noqa: E402

RESULTS = HERE.parent / "results" / "reliability"


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}, {platform.system()}"


def seeded_dir(root: Path, cache: Path | None) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    if cache is not None:
        with sqlite3.connect(cache) as source, sqlite3.connect(root / "embeddings.sqlite") as copy:
            source.backup(copy)
    return root


def ingest_kills(catalog: Path, cache: Path | None, work: Path, points: list[KillPoint]) -> tuple[dict, list[dict]]:
    clean_dir = seeded_dir(work / "clean", cache)
    harness.run_driver(["ingest", str(clean_dir), str(catalog)])
    clean = harness.store_contents(clean_dir)
    rows = []
    for n, point in enumerate(points):
        data_dir = seeded_dir(work / f"kill-{n}", cache)
        started = time.perf_counter()
        killed, last, _ = harness.run_until_killed(["ingest", str(data_dir), str(catalog)], point, timeout_s=900)
        crash = ""
        try:
            report = json.loads(harness.run_driver(["ingest", str(data_dir), str(catalog)])[-1][7:])
            lost, dup, differs = harness.compare(clean, harness.store_contents(data_dir))
            rec = harness.recommend_works(data_dir)
        except Exception as exc:  # a recovery that fails is a crash in the table, not a harness abort
            report, lost, dup, differs, rec, crash = {}, -1, -1, "", "", str(exc)[:300]
        rows.append({
            "point": point.name, "killed": killed, "last_stage": last, "lost": lost, "duplicated": dup,
            "differs": differs, "recommend": rec or "ok", "crash": crash, "recovery_encoded": report.get("encoded"),
            "repaired": report.get("repaired", []), "seconds": round(time.perf_counter() - started, 1),
        })
        print(f"  ingest kill {point.name}: {rows[-1]}", file=sys.stderr, flush=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    return clean, rows


def cold_subset_kills(catalog: Path, work: Path, n_items: int) -> list[dict]:
    """Kills during embedding with a cold cache: a subset of the catalog, killed after the first chunk."""
    subset = work / "subset"
    shutil.rmtree(subset, ignore_errors=True)
    subset.mkdir(parents=True)
    lines = (catalog / "items.jsonl").read_text(encoding="utf-8").splitlines()[:n_items]
    (subset / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    kept = {json.loads(line)["item_id"] for line in lines}
    with (catalog / "interactions.csv").open(encoding="utf-8", newline="") as source:
        rows_in = list(csv.reader(source))
    with (subset / "interactions.csv").open("w", encoding="utf-8", newline="") as out:
        column = rows_in[0].index("item_id")
        csv.writer(out).writerows([rows_in[0], *(r for r in rows_in[1:] if r[column] in kept)])
    rows = []
    for point in (KillPoint("encode 512", delay_s=0.5), KillPoint("encode 0", delay_s=1.0)):
        data_dir = seeded_dir(work / "cold", None)
        killed, last, _ = harness.run_until_killed(["ingest", str(data_dir), str(subset), "--preload"], point)
        with sqlite3.connect(data_dir / "embeddings.sqlite") as conn:
            cached = conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        report = json.loads(harness.run_driver(["ingest", str(data_dir), str(subset)])[-1][7:])
        got = harness.store_contents(data_dir)
        lost = n_items - sum(min(s["chroma"], s["bm25"]) for s in got["scenes"].values())
        rows.append({
            "point": f"cold subset ({n_items} items) {point.name}", "killed": killed, "last_stage": last,
            "cached_at_kill": cached, "recovery_encoded": report["encoded"], "lost": lost,
            "duplicated": sum(s["chroma_extra"] for s in got["scenes"].values()),
            "recommend": harness.recommend_works(data_dir) or "ok", "crash": "",
        })
        print(f"  cold kill: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def session_kills(data_dir: Path, kills: int) -> list[dict]:
    from scenerec.stores.session_store import SessionStore

    rows, session_id, completed = [], None, 0
    rng = random.Random(0)
    for _ in range(kills):
        args = ["session", str(data_dir)] + (["--session", session_id] if session_id else [])
        point = KillPoint("TURN", occurrence=rng.randint(1, 3), delay_s=rng.uniform(0.0, 0.15))
        killed, _, lines = harness.run_until_killed(args, point, timeout_s=300)
        session_id = session_id or next(line.split()[1] for line in lines if line.startswith("SESSION "))
        seen = max([completed] + [int(line.split()[1]) for line in lines if line.startswith("TURN ")])
        with SessionStore(data_dir / "sessions.sqlite") as store:
            session = store.load(session_id)
            numbers = [t.turn_no for t in store.turns(session_id)]
        ok = session.turns >= seen and numbers == list(range(1, session.turns + 1))
        rows.append({"point": point.name, "killed": killed, "turns_seen": seen, "turns_stored": session.turns,
                     "lost": max(0, seen - session.turns), "ok": ok})
        completed = session.turns
    return rows


def damage_cases(demo_data: Path, work: Path) -> list[dict]:
    sys.path.insert(0, str(HERE.parents[1] / "tests"))
    import test_integrity as cases  # the damage functions the tests use

    from scenerec.paths import DataPaths
    from scenerec.recommend.recommender import Recommender
    from scenerec.settings import EmbeddingSettings, StoreSettings, load_settings
    from scenerec.stores.integrity import check_data_dir

    rows = []
    for n, (name, (damage, _)) in enumerate(cases.DAMAGE.items()):
        # one directory per case: chroma caches a client per path per process, so a directory deleted
        # and copied again under the same path in this process would meet the previous case's client
        data_dir = work / f"damage-{n}"
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.copytree(demo_data, data_dir, ignore=shutil.ignore_patterns(".write.lock"))
        damage(DataPaths(data_dir))
        found = not check_data_dir(data_dir, StoreSettings(), EmbeddingSettings()).ok
        crash = ""
        try:
            with Recommender(load_settings(data_dir=data_dir, embedding={"show_progress": False})) as rec:
                cases.full_answers(rec)
            repaired = check_data_dir(data_dir, StoreSettings(), EmbeddingSettings()).ok
        except Exception as exc:
            repaired, crash = False, str(exc)[:300]
        rows.append({"case": name, "detected": found, "repaired": repaired, "crash": crash})
    return rows


def concurrency(demo_data: Path, work: Path, runs: int) -> list[dict]:
    rows = []
    for n in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(work / f"conc-{n}"),
             str(HERE.parents[1] / "tests" / "test_concurrency.py")],
            capture_output=True, text=True, cwd=HERE.parents[1], check=False,
        )
        rows.append({"run": n, "passed": done.returncode == 0, "seconds": round(time.perf_counter() - started, 1),
                     "tail": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]})
    return rows


def hostile_rows() -> list[dict]:
    try:
        import hostile  # another engineer's hostile-input checks, when present
    except ImportError:
        return []
    return list(hostile.rows())


def markdown(result: dict) -> str:
    def line(check: str, tried: int, passed: int, lost: int, crashes: int) -> str:
        return f"| {check} | {tried} | {passed} | {lost} | {crashes} |"

    ik, ck, sk = result["ingest_kills"], result["cold_kills"], result["session_kills"]
    dm, cc = result["damage"], result["concurrency"]
    rows = [
        f"Machine: {result['machine']}. Catalog: {result['catalog']} ({result['items']} items); "
        f"embedding cache pre-seeded from {result['seed_cache']} for the ingest kills (copied into each fresh "
        "data dir); the cold-cache kills encode a subset from nothing. Damage and concurrency: demo catalog.",
        "",
        "| check | tried | passed | lost | crashes |",
        "|---|---|---|---|---|",
        line("ingest SIGKILL (stages incl. items/histories txn, chroma writes, BM25, verify) + recovery",
             len(ik), sum(1 for r in ik if r["killed"] and r["lost"] == 0 and r["duplicated"] == 0
                          and not r["differs"] and r["recommend"] == "ok" and not r["crash"]),
             sum(max(0, r["lost"]) for r in ik), sum(1 for r in ik if r["crash"])),
        line("ingest SIGKILL during embedding, cold cache, resume from cache", len(ck),
             sum(1 for r in ck if r["killed"] and r["lost"] == 0 and r["recommend"] == "ok"),
             sum(r["lost"] for r in ck), 0),
        line("session SIGKILL mid-turn, reopen with every completed turn", len(sk),
             sum(1 for r in sk if r["ok"] and r["killed"]), sum(r["lost"] for r in sk), 0),
        line("damaged store detected and repaired on open", len(dm),
             sum(1 for r in dm if r["detected"] and r["repaired"]), 0, sum(1 for r in dm if r["crash"])),
        line("concurrent: 2 chats + score_batch + ingest, and a stale reader (test_concurrency)", len(cc),
             sum(1 for r in cc if r["passed"]), 0, sum(1 for r in cc if not r["passed"])),
    ]
    for r in result["hostile"]:
        rows.append(line(str(r["check"]), r["tried"], r["passed"], r["lost"], r["crashes"]))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", type=Path, default=Path("/work/shared/data/amazon-arts-office"))
    parser.add_argument("--seed-cache", type=Path, default=Path("/work/cache/scenerec-bench/ao-data/embeddings.sqlite"))
    parser.add_argument("--demo-data", type=Path, required=True, help="a clean data dir of the demo catalog")
    parser.add_argument("--work", type=Path, default=Path("/tmp/scenerec-reliability"))
    parser.add_argument("--random-kills", type=int, default=2)
    parser.add_argument("--session-kills", type=int, default=4)
    parser.add_argument("--cold-items", type=int, default=1200)
    parser.add_argument("--concurrency-runs", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(7)
    points = [
        KillPoint("validated", pause=True), KillPoint("items", pause=True), KillPoint("histories", pause=True),
        KillPoint("committed", pause=True), KillPoint("chroma arts", occurrence=5, delay_s=0.1),
        KillPoint("chroma office", occurrence=3, delay_s=0.05), KillPoint("bm25 arts", pause=True),
        KillPoint("verify", pause=True),
    ] + [KillPoint("committed", delay_s=round(rng.uniform(0.5, 12.0), 2)) for _ in range(args.random_kills)]
    started = time.perf_counter()
    clean, ik = ingest_kills(args.catalog, args.seed_cache, args.work / "ao", points)
    result = {
        "machine": machine(), "catalog": str(args.catalog), "items": clean["tables"]["items"],
        "seed_cache": str(args.seed_cache), "ingest_kills": ik,
        "cold_kills": cold_subset_kills(args.catalog, args.work / "ao", args.cold_items),
        "session_kills": session_kills(args.work / "ao" / "clean", args.session_kills),
        "damage": damage_cases(args.demo_data, args.work),
        "concurrency": concurrency(args.demo_data, args.work, args.concurrency_runs),
        "hostile": hostile_rows(),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"reliability-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (out.with_suffix(".md")).write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
