"""`scenerec chat` (the terminal app) and `scenerec sessions` (its stored conversations)."""

from __future__ import annotations

import sys

import click

from ..paths import DataPaths
from ..settings import Settings
from ..stores.session_store import SessionStore
from ..text_safety import printable
from .common import common_options, emit_json


@click.command()
@click.option("--user", "user_id", help="User to recommend for (default: a demo user with a thin scene).")
@click.option("--scene", help="Scene to start in (default: the user's thinnest scene).")
@click.option("--session", "session_id", help="Resume a stored session (see `scenerec sessions list`).")
@click.option("--backend", help="LLM backend: transformers (embedded), vllm, openai, llamacpp, fake.")
@click.option(
    "-m", "--model", help="LLM model: a .gguf file or model folder (openai: the server's model name)."
)
@click.option("--no-llm", is_flag=True, help="No LLM: the rule parser reads messages, templates explain.")
@common_options
def chat(
    settings: Settings,
    as_json: bool,
    user_id: str | None,
    scene: str | None,
    session_id: str | None,
    backend: str | None,
    model: str | None,
    no_llm: bool,
) -> None:
    """Chat with the recommender in a terminal app (an empty data directory gets the demo catalog)."""
    if as_json:
        raise click.UsageError("chat is interactive; --json applies to `scenerec sessions list`")
    llm = settings.llm.model_copy(update={k: v for k, v in {"backend": backend, "model": model}.items() if v})
    settings = settings.model_copy(update={"llm": llm})
    paths = DataPaths(settings.data_dir)
    if session_id is not None:
        if not paths.sessions_db.exists():
            raise click.ClickException(f"no sessions in {paths.root} yet")
        with SessionStore(paths.sessions_db) as store:
            store.load(session_id)  # UnknownSessionError: one line, before the screen opens
    paths.ensure()
    from ..tui import make_app

    app = make_app(
        settings, user_id=user_id, scene=scene, session_id=session_id, backend=None if no_llm else "settings"
    )
    app.run()
    if app.return_code:
        sys.exit(app.return_code)


@click.group()
def sessions() -> None:
    """Stored chat sessions."""


@sessions.command("list")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--user", "user_id", help="Only this user's sessions.")
@common_options
def list_sessions(settings: Settings, as_json: bool, limit: int, user_id: str | None) -> None:
    """Sessions, most recently used first; resume one with `scenerec chat --session ID`."""
    path = DataPaths(settings.data_dir).sessions_db
    rows = []
    if path.exists():
        with SessionStore(path) as store:
            rows = store.list_sessions(limit, user_id=user_id)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no sessions yet: start one with `scenerec chat`")
        return
    for row in rows:
        last = printable(row.last_message, 50)
        click.echo(
            f"{row.session_id}  {printable(row.user_id, 16):<16} {row.scene:<12} {row.turns:>3} turns  "
            f"{row.updated_at}  {last}"
        )


@sessions.command("show")
@click.argument("session_id")
@common_options
def show_session(settings: Settings, as_json: bool, session_id: str) -> None:
    """A session's turns: messages, actions, replies and the lists shown."""
    path = DataPaths(settings.data_dir).sessions_db
    if not path.exists():
        raise click.ClickException(f"no sessions in {settings.data_dir} yet")
    with SessionStore(path) as store:
        session = store.load(session_id)
        turns = store.turns(session_id)
    if as_json:
        emit_json(
            {"session": session.model_dump(mode="json"), "turns": [t.model_dump(mode="json") for t in turns]}
        )
        return
    click.echo(f"session {session.session_id}: user {printable(session.user_id, 40)}, scene {session.scene}")
    for turn in turns:
        if turn.user_text:
            click.echo(f"\n[{turn.turn_no}] you: {printable(turn.user_text, 200)}")
        else:
            click.echo(f"\n[{turn.turn_no}] ({turn.action.get('action', 'key')})")
        click.echo(f"    agent ({turn.path}): {printable(turn.reply, 300)}")
        for rank, rec in enumerate(turn.shown or [], start=1):
            click.echo(f"    {rank:>2}. {printable(rec.title, 80)}")
