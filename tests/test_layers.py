"""The package's shape: folders read as the data flow and every import points down a floor.

Floors, top to bottom (README "How it works"): cli -> tui (`scenerec chat` opens the app) -> agent,
evaluation -> recommend -> rerank, transfer -> llm, stores -> catalog, prompts -> the leaves (models,
errors, paths, settings, text_safety).
A module may import its own package and any lower floor, never a package beside it on its floor nor one
above. Imports inside functions and under TYPE_CHECKING count: the AST of every module is walked.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scenerec"

FLOORS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"tui"},
    {"agent", "evaluation"},
    {"recommend"},
    {"rerank", "transfer"},
    {"llm", "stores"},
    {"catalog", "prompts"},
    {"models", "errors", "paths", "settings", "text_safety", "__init__"},
]
LEAVES = FLOORS[-1]
FLOOR_OF = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str) -> set[str]:
    """Every scenerec module `path` imports, anywhere in the file, resolved to its full name."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    known = modules()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from . import prompts` names a module; `from .x import name` names something in x
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        found |= {t for t in targets if t == "scenerec" or t.startswith("scenerec.")}
    return found - {name}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    return {name: imported(path, name) for name, path in modules().items()}


def test_every_room_has_a_floor() -> None:
    assert {room(m) for m in modules()} <= set(FLOOR_OF), "a new top-level module needs a floor here"


def test_imports_only_point_down() -> None:
    wrong = []
    for source, targets in graph().items():
        for target in targets:
            a, b = room(source), room(target)
            if a == b or target == "scenerec":
                continue
            if FLOOR_OF[b] > FLOOR_OF[a] or (a in LEAVES and b in LEAVES):
                continue
            wrong.append(f"{source} -> {target} ({a} is on floor {FLOOR_OF[a]}, {b} on {FLOOR_OF[b]})")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(sorted(wrong))


def test_text_safety_imports_nothing_of_ours() -> None:
    assert graph()["scenerec.text_safety"] == set()


def test_no_import_circles() -> None:
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_walker_sees_imports_inside_functions_and_type_checking(tmp_path: Path) -> None:
    """The check is only as good as its walker: upward imports hidden in a function or under
    TYPE_CHECKING are found, resolved from the module's own package."""
    hidden = tmp_path / "hidden.py"
    hidden.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..agent.conversation import Agent\n"
        "def f():\n    from ..recommend.recommender import Recommender\n    from . import lexical\n"
    )
    found = imported(hidden, "scenerec.stores.hidden")
    assert found == {"scenerec.agent.conversation", "scenerec.recommend.recommender", "scenerec.stores.lexical"}


@pytest.mark.parametrize(
    ("module", "table"),
    [("scenerec.llm.registry", "BACKENDS"), ("scenerec.evaluation.methods", "METHODS"),
     ("scenerec.stores.embeddings", "ENCODERS")],
)
def test_registries_name_modules_of_their_own_package(module: str, table: str) -> None:
    entries = getattr(importlib.import_module(module), table)
    package = module.rsplit(".", 1)[0]
    for name, (target, class_name) in entries.items():
        if not target.startswith("scenerec."):
            continue  # a third-party encoder package
        assert target.startswith(package + "."), f"{table}[{name!r}] names {target}, outside {package}"
        assert hasattr(importlib.import_module(target), class_name) or name == "multilingual"


def test_modules_stay_small() -> None:
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
