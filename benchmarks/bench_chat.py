"""Chat latency with the embedded model, measured in the real Textual app (headless).

For each of N turns: the time from Enter to the first recommendation card on screen (the cards arrive
before the LLM's explanations), the time to the full reply, and — while the LLM is still working — how
long a key press takes to show up in the input line.

    python benchmarks/bench_chat.py [--data-dir DIR] [--turns 20] [--json OUT]

An empty data dir gets the demo catalog first (not timed). Numbers depend on the machine's load: the
script prints the load average next to them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

MESSAGES = [
    "recommend something",
    "cheaper",
    "for a child",
    "not paper",
    "show me arts",
    "something for painting",
    "not acrylic",
    "more like #2",
    "show me office",
    "something to organise my desk",
    "not pens",
    "more like #1",
    "recommend something",
    "for a student",
    "show me arts",
    "yarn for knitting",
    "not wool",
    "show me office",
    "colourful",
    "recommend something new",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def send_key(app, key: str) -> None:
    """A key as the terminal driver delivers it. (Pilot.press also waits for the process to go idle,
    which never happens while the model computes, so it would measure that wait instead.)"""
    from textual import events

    event = events.Key(key, key if len(key) == 1 else None)
    event.set_sender(app)
    app._driver.send_message(event)


async def run(data_dir: Path, turns: int) -> dict:
    from textual.widgets import Input

    from scenerec.llm import make_backend
    from scenerec.paths import DataPaths, demo_catalog_dir
    from scenerec.settings import LLMSettings, load_settings
    from scenerec.stores.ingest import ingest_catalog
    from scenerec.tui import make_app

    settings = load_settings(data_dir=data_dir)
    if not DataPaths(data_dir).catalog_db.exists():
        quiet = settings.model_copy(
            update={"embedding": settings.embedding.model_copy(update={"show_progress": False})}
        )
        ingest_catalog(demo_catalog_dir(), quiet)
    backend = make_backend(LLMSettings())
    started = time.perf_counter()
    app = make_app(settings, backend=backend, sessions_db=data_dir / "bench-sessions.sqlite")
    shown: list[float] = []
    results: dict = {"turns": [], "load_average": os.getloadavg(), "cpus": os.cpu_count()}
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        results["open_and_first_list_s"] = round(time.perf_counter() - started, 2)
        original = app.cards.show

        def timed_show(*args, **kwargs):
            shown.append(time.perf_counter())
            return original(*args, **kwargs)

        app.cards.show = timed_show  # type: ignore[method-assign]
        box = app.query_one("#chat-input", Input)
        box.focus()
        for turn in range(turns):
            message = MESSAGES[turn % len(MESSAGES)]
            shown.clear()
            box.value = message
            enter = time.perf_counter()
            send_key(app, "enter")
            key_latencies = []
            while app._busy > 0 or not shown:  # the agent's worker is running
                await asyncio.sleep(0.5)  # a person typing, not a key storm that would slow the model
                if app._busy > 0 and shown:  # cards are up, the LLM is explaining: type meanwhile
                    before = time.perf_counter()
                    send_key(app, "x")
                    while not box.value.endswith("x"):
                        await asyncio.sleep(0.005)
                    key_latencies.append(time.perf_counter() - before)
                    send_key(app, "backspace")
                if time.perf_counter() - enter > 300:
                    raise RuntimeError("a turn took over 5 minutes")
            await app.workers.wait_for_complete()
            done = time.perf_counter()
            reply = app.session.turns
            results["turns"].append(
                {
                    "message": message,
                    "first_card_s": round(shown[0] - enter, 3) if shown else None,
                    "full_reply_s": round(done - enter, 3),
                    "keys_typed_while_llm_worked": len(key_latencies),
                    "key_latency_max_s": round(max(key_latencies), 3) if key_latencies else None,
                    "turn": reply,
                }
            )
        results["parse_counts"] = dict(app.agent.parse_counts)
        results["backend_error"] = app.agent.backend_error
    first = [t["first_card_s"] for t in results["turns"] if t["first_card_s"] is not None]
    full = [t["full_reply_s"] for t in results["turns"]]
    keys = [t["key_latency_max_s"] for t in results["turns"] if t["key_latency_max_s"] is not None]
    results["summary"] = {
        "turns": turns,
        "first_card_p50_s": round(statistics.median(first), 3),
        "first_card_p95_s": round(percentile(first, 0.95), 3),
        "full_reply_p50_s": round(statistics.median(full), 3),
        "full_reply_p95_s": round(percentile(full, 0.95), 3),
        "turns_with_keys_typed_during_llm": len(keys),
        "key_latency_during_llm_max_s": round(max(keys), 3) if keys else None,
        "key_latency_during_llm_p50_s": round(statistics.median(keys), 3) if keys else None,
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/scenerec-bench-chat"))
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--json", type=Path, help="Write every turn's numbers here.")
    args = parser.parse_args()
    results = asyncio.run(run(args.data_dir, args.turns))
    for turn in results["turns"]:
        print(
            f"{turn['message']:<32} first card {turn['first_card_s']:>6} s   full reply {turn['full_reply_s']:>6} s"
            f"   keys typed while the LLM worked: {turn['keys_typed_while_llm_worked']}"
            f" (max latency {turn['key_latency_max_s']} s)"
        )
    print(json.dumps({k: v for k, v in results.items() if k != "turns"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
