"""Options every command takes, and how the CLI builds settings and prints results."""

from __future__ import annotations

import errno
import functools
import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from ..errors import StoreError
from ..models import Recommendation
from ..recommend.scores import top_share
from ..rerank.rephrase import evidence_sentence
from ..settings import load_settings
from ..text_safety import printable


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --data-dir, --json, --config, --chroma-host/--chroma-port; passes `settings` and `as_json`."""

    @click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        envvar="SCENEREC_DATA_DIR",
        help="Data directory (default: a per-user data directory).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
    @click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path),
        help="TOML config file (default: the per-user config file, if any).",
    )
    @click.option("--chroma-host", help="Use a chroma server at this host instead of the embedded store.")
    @click.option("--chroma-port", type=int, default=None, help="Port of the chroma server.")
    @functools.wraps(command)
    def wrapper(
        data_dir: Path | None,
        as_json: bool,
        config_file: Path | None,
        chroma_host: str | None,
        chroma_port: int | None,
        **kwargs: Any,
    ) -> Any:
        settings = load_settings(config_file, data_dir=data_dir)
        if chroma_host or chroma_port:
            stores = settings.stores.model_copy(
                update={
                    k: v for k, v in {"chroma_host": chroma_host, "chroma_port": chroma_port}.items() if v
                }
            )
            settings = settings.model_copy(update={"stores": stores})
        try:
            return command(settings=settings, as_json=as_json, **kwargs)
        except OSError as exc:
            raise StoreError(os_problem(exc)) from exc
        except sqlite3.Error as exc:  # "database or disk is full", "unable to open database file"
            raise StoreError(f"cannot use the data in {settings.data_dir}: {exc}{_KEPT}") from exc

    return wrapper


_KEPT = "; what was stored before is kept"


def os_problem(exc: OSError) -> str:
    """A file-system error as one line: what failed, where, and for a full disk what to do."""
    where = f" {printable(str(exc.filename), 200)}" if exc.filename else ""
    problem = exc.strerror or printable(str(exc), 200)
    if exc.errno == errno.ENOSPC:
        return f"cannot write{where}: {problem}; free some space and run the command again{_KEPT}"
    return f"cannot use{where}: {problem}"


def emit_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, dict):
        data = value
    else:
        data = [v.model_dump(mode="json") for v in value]
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def format_recommendations(recommendations: Sequence[Recommendation]) -> str:
    """Numbered list; each item followed by the history items that pulled it in."""
    lines = []
    for rank, rec in enumerate(recommendations, start=1):
        lines.append(
            f"{rank:>2}. {printable(rec.title, 90)}  [{rec.scene}]  score {rec.score:.4f} ({top_share(rec.score)})"
        )
        if rec.source == "popular":
            lines.append("    popular in this scene (no history to go on)")
        elif rec.prior:
            bought = f"{rec.buyers} shoppers bought it; " if rec.buyers else ""
            lines.append(f"    on its popularity in {rec.scene} ({bought}no history item moves it)")
        elif rec.evidence:
            because = "; ".join(
                f'"{printable(e.title, 60)}" ({e.scene}'
                + (f", {100 * e.share:.0f}% of the lift" if e.share is not None else f", {e.similarity:.2f}")
                + ")"
                for e in rec.evidence
            )
            lines.append(f"    because you liked {because}")
        lines.append(f"    {printable(rec.explanation or evidence_sentence(rec), 240)}")
    return "\n".join(lines)
