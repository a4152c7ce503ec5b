"""House habits, enforced in the suite (and so by .ci/run): ruff lint and format, mypy."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],  # files and settings: [tool.mypy] in pyproject.toml (medusa_v2/)
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_is_clean(command):
    result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_is_typed():
    assert (ROOT / "medusa_v2" / "py.typed").is_file()


# -- the layout: README's map of the package, and no import cycles --

PACKAGE = ROOT / "medusa_v2"
MAP_HEADING = "## How the code is organised"


def package_modules() -> set[str]:
    """Return every module of medusa_v2/ as a path under it (`store/sqlite/bulk.py`)."""
    return {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")}


def readme_map() -> list[str]:
    """Return the modules README's map lists, in order (bullets that start with a module path)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert MAP_HEADING in text, f"README.md has no {MAP_HEADING!r} section"
    section = text.split(MAP_HEADING, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^- `([\w/]+\.py)`", section, flags=re.MULTILINE)


def test_readme_maps_every_module_and_only_those():
    listed = readme_map()
    assert len(listed) == len(set(listed)), "a module is listed twice"
    missing = sorted(package_modules() - set(listed))
    gone = sorted(set(listed) - package_modules())
    assert not missing, f"README's map does not say what these modules do: {missing}"
    assert not gone, f"README's map names modules that do not exist: {gone}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Return the imports run when the module is imported.

    Imports inside functions run later, and `if TYPE_CHECKING:` ones never, so they
    cannot make a cycle; class bodies and try/if blocks run at import time and count.
    """
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            for field in ("body", "orelse", "finalbody"):
                visit(getattr(node, field, None) or [])
            for handler in getattr(node, "handlers", None) or []:
                visit(handler.body)

    visit(tree.body)
    return found


def import_graph() -> dict[str, set[str]]:
    """Return, for each medusa_v2 module, the medusa_v2 modules it imports at import time."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges: set[str] = set()
        for node in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                # `from pkg import sub` imports the submodule; `from mod import name`, the module.
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in paths else target for a in node.names]
            edges.update(t for t in targets if t in paths and t != name)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


# Cycles that exist today in code this test's authors could not change; each entry
# says why it is tolerated. Empty: there are none.
KNOWN_CYCLES: list[list[str]] = []


def test_no_import_cycles_among_modules():
    assert import_cycles(import_graph()) == KNOWN_CYCLES


def test_the_cycle_check_sees_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
