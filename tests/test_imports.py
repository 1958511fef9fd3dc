"""Imports go one way (ARCHITECTURE.md): models never import impact_map, the light entry points do
not load the component's LibTorch extension (_core), and the package never imports the checkout's
examples/, benchmarks/ or tests/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "impact_elastix"


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import impact_elastix",
        "import impact_elastix.torch",
        "from impact_elastix.models import builtin_name, fetch, read_metadata",
        "from impact_elastix.models.archive import torchscript_members",
        "from impact_elastix.cli import main",
    ],
)
def test_light_entry_points_do_not_load_the_extension(statement: str) -> None:
    assert "impact_elastix._core" not in _loaded_after(statement)


def _imports(path: Path) -> set[str]:
    """Modules of the package that a source file imports (relative imports resolved)."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out |= {module} | {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("impact_elastix")}


def test_models_never_import_the_map_builders() -> None:
    for path in (PACKAGE / "models").glob("*.py"):
        bad = {m for m in _imports(path) if m.startswith(("impact_elastix.impact_map", "impact_elastix.presets"))}
        assert not bad, f"{path.name} imports {bad}: models/ must not depend on the map builders"


def test_no_import_cycles_between_modules() -> None:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ importing its own submodules is not a cycle of concern; edges into a package
    # mean its __init__ only.
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
                if not all(
                    a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(cycle[:-1], cycle[1:], strict=True)
                ):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif state.get(nxt) is None:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_package_needs_no_source_checkout() -> None:
    """examples/, benchmarks/ and tests/ are not installed with the package: it never imports them."""
    checkout_only = {"examples", "benchmarks", "tests"}
    for path in PACKAGE.rglob("*.py"):
        top = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                top |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                top.add(node.module.split(".")[0])
        assert not top & checkout_only, f"{path.name} imports {top & checkout_only}"
