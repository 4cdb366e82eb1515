"""The `scenerec` command line: a click group of thin commands over the core."""

from __future__ import annotations

import sys

import click

from ..errors import CatalogError, ScenerecError
from .catalog_commands import ingest, items, path, scenes
from .chat_commands import chat, sessions
from .check_commands import check
from .eval_commands import eval_command
from .recommend_commands import demo, recommend, users
from .score_commands import score
from .train_commands import train


@click.group()
@click.version_option(package_name="scenerec")
def cli() -> None:
    """scenerec: recommendations that carry what it knows about you from one scene into another."""


for command in (
    ingest, scenes, items, path, recommend, users, demo, eval_command, score, chat, sessions, train,
    check,
):
    cli.add_command(command)


def main() -> None:
    """Console entry point: errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CatalogError as exc:
        click.echo(f"catalog error: {exc}", err=True)
        sys.exit(2)
    except ScenerecError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
