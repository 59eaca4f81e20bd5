"""ruff and mypy run as part of the test suite, so the README's one test command covers them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("tool, args", [
    ("ruff", ["check", "heedful", "tests", "benchmarks", "docs/hooks"]),
    ("mypy", []),
])
def test_code_health(tool: str, args: list[str]) -> None:
    exe = shutil.which(tool) or str(Path(sys.executable).parent / tool)
    proc = subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- size and shape

PACKAGE = ROOT / "heedful"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500
MAX_TYPE_IGNORES = 5


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at the top or inside functions alike."""
    import ast

    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import mod`
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a path of module names, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_inside_the_package() -> None:
    cycle = _cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_planted_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_functions_and_modules_stay_small() -> None:
    import ast

    too_long = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if (lines := text.count("\n")) > MAX_MODULE_LINES:
            too_long.append(f"module {name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"function {name}.{node.name}: {length} lines")
    assert not too_long, (f"over {MAX_FUNCTION_LINES} lines a function or {MAX_MODULE_LINES} a "
                          "module:\n  " + "\n  ".join(too_long))


def test_few_type_ignores() -> None:
    found = [f"{p.relative_to(ROOT)}:{i}" for p in _modules().values()
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if "type: ignore" in line]
    assert len(found) <= MAX_TYPE_IGNORES, "type: ignore at " + ", ".join(found)
