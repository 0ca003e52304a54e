"""The package's shape: no import circles, parts that do not reach into the shapes world or the CLI,
a package root of cross-part modules only, and one kind table per part that matches its config."""

import ast
from pathlib import Path

import pytest

import dream3d
from dream3d.config import kind_classes
from dream3d.geometry import GEOMETRY
from dream3d.guidance import GUIDANCE, GuidanceConfig
from dream3d.renderers import BACKGROUNDS, MATERIALS, RENDERERS
from dream3d.renderers.backgrounds import BackgroundConfig
from dream3d.text_to_3d import FineStageConfig, Txt2MeshConfig

ROOT = Path(dream3d.__file__).resolve().parent.parent
PACKAGES = ("dream3d", "stereo")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its body (deferred imports included)."""
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_circles():
    graph = import_graph()
    circles = sorted({" -> ".join(sorted((a, b))) for a in graph for b in graph[a] if a in reachable(graph, b)})
    assert not circles, f"modules that import each other (directly or through others): {circles}"


@pytest.mark.parametrize(
    "part",
    [
        "dream3d.cameras",
        "dream3d.geometry",
        "dream3d.renderers",
        "dream3d.guidance",
        "dream3d.systems",
        "dream3d.export",
        "dream3d.trainer",
    ],
)
def test_parts_do_not_import_the_shapes_world_or_the_cli(part):
    graph = import_graph()
    modules = [m for m in graph if m == part or m.startswith(part + ".")]
    assert modules
    for module in modules:
        bad = sorted(m for m in reachable(graph, module) if m.startswith(("dream3d.shapes", "dream3d.cli")))
        assert not bad, f"{module} reaches {bad}"


def test_library_never_imports_the_cli():
    graph = import_graph()
    for module, edges in graph.items():
        if not module.startswith(("dream3d.cli", "dream3d.__main__")):
            assert not [e for e in edges if e.startswith("dream3d.cli")], module


def test_the_package_root_holds_only_modules_shared_by_every_part():
    root_modules = {p.stem for p in (ROOT / "dream3d").glob("*.py")}
    shared = {
        "__init__",
        "__main__",
        "cameras",
        "config",
        "errors",
        "grid",
        "io",
        "trainer",
        "image_to_3d",
        "text_to_3d",
        "text_to_image",
    }
    assert root_modules == shared, "a module that belongs to one part goes into that part's package"


def test_kind_tables_match_the_configs():
    defaults = Txt2MeshConfig()
    for table, config_type, default in [
        (GUIDANCE, GuidanceConfig, defaults.guidance),
        (BACKGROUNDS, BackgroundConfig, defaults.background),
    ]:
        kinds = kind_classes(config_type)
        assert list(kinds) == list(table)
        assert default.kind == next(iter(kinds))  # the first kind is the default
    fine = FineStageConfig()  # the coarse stage's parts come first, the fine (mesh) stage's after
    for table, coarse, refined in [
        (GEOMETRY, defaults.geometry, fine.geometry),
        (RENDERERS, defaults.renderer, fine.renderer),
        (MATERIALS, defaults.material, fine.material),
    ]:
        assert list(table) == list(dict.fromkeys([coarse.kind, refined.kind]))
