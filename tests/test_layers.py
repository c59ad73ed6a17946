"""Every import points down the layers of docs/ARCHITECTURE.md, and no modules import each other in a circle.

Top to bottom: the frontends (`vidsr.cli`, `vidsr.__main__`, `vidsr.commands`, the VapourSynth plugin `vsvidsr`, the
web demo `web`); beside them `vidsr.quality`, `vidsr.train` and `vidsr.tools`, which may import each other and
anything below; `vidsr.jobs`; `vidsr.media`; `vidsr.compute`; `vidsr.models`; and at the bottom `vidsr.errors`,
`vidsr.formats`, `vidsr.color` and the package `vidsr` itself (whose public names are imported on first use, by
name, so that facade is not an import here). A module may import its own layer or any layer below it.

Every `import` and `from ... import` counts, wherever it stands: at module level, inside a function (an import
deferred for start-up time is still a dependency, and one deferred to hide a circle is what this test is for)
and under `if TYPE_CHECKING:` (a type in an annotation is a dependency too). Imports written as strings
(`importlib.import_module`, the CLI's subcommand table) are not seen. The package `__init__`s that importing a
submodule runs on the way are not counted: an edge goes to the module named, or to the package when a name is
taken from its `__init__`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"vidsr": REPO / "vidsr", "vsvidsr": REPO / "plugins" / "vsvidsr", "web": REPO / "web"}

FRONTENDS, BESIDE, JOBS, MEDIA, COMPUTE, MODELS, BOTTOM = 6, 5, 4, 3, 2, 1, 0
LAYER_NAMES = {FRONTENDS: "frontends", BESIDE: "quality/train/tools", JOBS: "jobs", MEDIA: "media",
               COMPUTE: "compute", MODELS: "models", BOTTOM: "formats/errors"}
# A module is in the layer of the longest of these that is its name or a package above it.
LAYERS = {
    "vidsr.cli": FRONTENDS, "vidsr.__main__": FRONTENDS, "vidsr.commands": FRONTENDS, "vsvidsr": FRONTENDS,
    "web": FRONTENDS,
    "vidsr.quality": BESIDE, "vidsr.train": BESIDE, "vidsr.tools": BESIDE,
    "vidsr.jobs": JOBS,
    "vidsr.media": MEDIA,
    "vidsr.compute": COMPUTE,
    "vidsr.models": MODELS,
    "vidsr.errors": BOTTOM, "vidsr.formats": BOTTOM, "vidsr.color": BOTTOM,
}
PACKAGE_ONLY = {"vidsr": BOTTOM}  # the package's own __init__, not everything under it


def discover() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package, the plugin and the web demo."""
    modules = {}
    for top, folder in ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def layer_of(module: str) -> int | None:
    if module in PACKAGE_ONLY:
        return PACKAGE_ONLY[module]
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if (prefix := ".".join(parts[:end])) in LAYERS:
            return LAYERS[prefix]
    return None


def imports_of(module: str, source: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import of a known module anywhere in `source`."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import sub` imports the submodule; `from mod import name` the module
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            # `import a.b.c` where c is a name, not a module: the longest known module it starts with
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.append((name, node.lineno))
    return found


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, list[tuple[str, int]]]:
    """module -> [(imported module, line)], for modules given as name -> (source, is a package)."""
    known = set(sources)
    return {name: imports_of(name, source, is_package, known) for name, (source, is_package) in sources.items()}


def upward_imports(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    problems = []
    for module, imported in sorted(graph.items()):
        for target, line in imported:
            if layer_of(target) > layer_of(module):
                problems.append(f"{module} ({LAYER_NAMES[layer_of(module)]}) imports {target} "
                                f"({LAYER_NAMES[layer_of(target)]}) at line {line}")
    return problems


def find_cycle(graph: dict[str, list[tuple[str, int]]]) -> list[str] | None:
    """One circle of imports (first module repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target, _ in graph.get(module, ()):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int]]]:
    return import_graph({name: (path.read_text(), path.name == "__init__.py") for name, path in discover().items()})


def test_every_module_has_a_layer(graph):
    unplaced = [module for module in graph if layer_of(module) is None]
    assert not unplaced, f"add these to LAYERS in tests/test_layers.py and docs/ARCHITECTURE.md: {unplaced}"


def test_the_walk_sees_the_imports(graph):
    # a walker that found nothing would pass everything below
    assert any(target == "vidsr.models.zoo" for target, _ in graph["vidsr.compute.upscaler"])
    assert any(target == "vidsr.models.blend" for target, _ in graph["vidsr.models.zoo"])
    assert sum(map(len, graph.values())) > 150


def test_no_layer_imports_a_higher_one(graph):
    problems = upward_imports(graph)
    assert not problems, "imports that point up a layer:\n" + "\n".join(problems)


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "modules that import each other in a circle: " + " -> ".join(cycle)


def test_the_checks_catch_an_upward_import_and_a_circle():
    sources = {
        "vidsr.models.zoo": ("from vidsr.models import blend\n", False),
        "vidsr.models": ("", True),
        "vidsr.models.blend": ("def load():\n    from vidsr.models.zoo import load_model\n", False),
        "vidsr.compute.upscaler": ("", False),
        "vidsr.models.chain": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                               "    from vidsr.compute.upscaler import Upscaler\n", False),
    }
    graph = import_graph(sources)
    assert upward_imports(graph) == [
        "vidsr.models.chain (models) imports vidsr.compute.upscaler (compute) at line 3"]
    assert find_cycle(graph) == ["vidsr.models.blend", "vidsr.models.zoo", "vidsr.models.blend"]
