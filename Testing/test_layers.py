"""The library's structure, checked on its import graph (every import, also those inside functions):
no cycles, each layer imports only layers below it, the developer tools (the synthbrain-dev
distribution, devtools/) are never imported by the library and import only the library, nothing
imports Slicer, Qt or VTK, and the errors and the card reader import without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIB = REPO / "SynthBrainLib"
DEV = REPO / "devtools" / "synthbrain_dev"

#: rank of each part of the library: a module may import modules of its own rank or lower only.
LAYERS = [
    ("foundation", ("SynthBrainLib", "SynthBrainLib._version", "SynthBrainLib.errors")),
    ("outputs", ("SynthBrainLib.outputs",)),
    ("models", ("SynthBrainLib.models",)),
    ("insertion", ("SynthBrainLib.insertion",)),  # registration, tissue maps and blending for lesion insertion
    ("extraction", ("SynthBrainLib.extraction",)),  # brain masks of scans with skull (deepbet), bias field
    ("pipelines", ("SynthBrainLib.pipelines",)),
    ("batch", ("SynthBrainLib.batch",)),
    ("faces", ("SynthBrainLib.cli",)),
]


def layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # the top package itself is foundation; its subpackages must each be listed
            inside = module.startswith(prefix + ".") and prefix != "SynthBrainLib"
            if (module == prefix or inside) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    assert best is not None, f"{module} is in no layer"
    return best[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(DEV.parent if path.is_relative_to(DEV) else REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def known_modules() -> dict[str, Path]:
    return {module_name(p): p for p in LIB.rglob("*.py")}


def import_targets(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names imported from it) of every import in ``path``, relative ones made absolute;
    ``import a.b`` gives (``a.b``, ())."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets += [(a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            targets.append((base, tuple(a.name for a in node.names)))
    return targets


def absolute_imports(path: Path) -> set[str]:
    """Every module name ``path`` imports (``from a import b``: ``a`` and ``a.b``)."""
    return {m for base, names in import_targets(path) for m in (base, *(f"{base}.{n}" for n in names))}


def imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """SynthBrainLib modules ``path`` imports (``from . import x`` counts as importing module x)."""
    found = set()
    for base, names in import_targets(path):
        found |= {f"{base}.{n}" if f"{base}.{n}" in modules else base for n in names} if names else {base}
    return {t for t in found if t in modules and t != module_name(path)}


def graph() -> dict[str, set[str]]:
    modules = known_modules()
    return {name: imports(path, modules) for name, path in modules.items()}


def test_no_import_cycles():
    edges = graph()
    # the package __init__ files only re-export (lazily); an edge into one is an edge into the package
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in edges:
        if node not in index:
            visit(node)
    assert cycles == [], f"import cycles: {cycles}"


def test_each_layer_imports_only_layers_below():
    wrong = [
        f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
        for a, targets in graph().items()
        for b in targets
        if layer_of(b) > layer_of(a)
    ]
    assert wrong == [], "imports against the layers:\n" + "\n".join(wrong)


def test_the_library_never_imports_developer_tools():
    users = sorted(
        module_name(path)
        for path in LIB.rglob("*.py")
        if any(name.split(".")[0] == "synthbrain_dev" for name in absolute_imports(path))
    )
    assert users == [], f"library modules importing the developer tools (synthbrain_dev): {users}"
    assert not (LIB / "tools").exists(), "the developer tools are not a part of the library's package"


def test_the_developer_tools_import_only_the_library():
    """Of this repository's packages, synthbrain_dev imports SynthBrainLib (and itself) only: not the
    Slicer module, not the tests' helpers."""
    ours = {"SynthBrainSlicer", "SynthBrain", "slicer_app", "tiny_models", "conftest", "synthbrain_demo_models"}
    ours |= {p.stem for p in (REPO / "Testing").glob("*.py")}
    modules = sorted(DEV.rglob("*.py"))
    assert len(modules) > 20, f"the developer tools are found: {len(modules)} modules"
    wrong = sorted(
        f"{module_name(path)} imports {name}"
        for path in modules
        for name in absolute_imports(path)
        if name.split(".")[0] in ours
    )
    assert wrong == [], "developer tools importing other parts of the repository:\n" + "\n".join(wrong)


def test_the_library_never_imports_slicer_qt_or_vtk():
    banned = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "PySide6", "PyQt5"}
    for path in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            )
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.relative_to(REPO)} imports {name}"


def test_errors_the_card_reader_and_the_request_check_run_without_torch():
    """In a Python where torch and monai cannot be imported (Slicer before its first-use install)."""
    script = textwrap.dedent("""
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "monai", "safetensors"):
                    raise ImportError(f"{name} is not installed")
                return None

        sys.meta_path.insert(0, NoTorch())
        import SynthBrainLib
        import SynthBrainLib.errors
        import SynthBrainLib.models.cards
        from SynthBrainLib.models.requests import check_request
        from SynthBrainLib.models.schema import BRAIN_KIND
        assert SynthBrainLib.__version__
        assert issubclass(SynthBrainLib.ConditionError, SynthBrainLib.SynthBrainError)
        card = SynthBrainLib.models.cards.builtin_cards()["brain-ldm"]
        assert check_request(card, kind=BRAIN_KIND, conditions={"age": 60}, seed=1).seed == 1
        print("torch" in sys.modules, "monai" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"], f"torch / monai imported: {done.stdout}"


def test_the_slicer_module_loads_before_torch_is_installed():
    """SynthBrainSlicer imports SynthBrainLib's errors at the top, and the heavy parts only inside
    functions: with torch and monai missing (a fresh Slicer), every module of it imports."""
    script = textwrap.dedent(f"""
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "monai", "safetensors"):
                    raise ImportError(f"{{name}} is not installed")
                return None

        sys.meta_path.insert(0, NoTorch())
        sys.path.insert(0, {str(REPO / "SynthBrain")!r})
        import SynthBrainSlicer.logic, SynthBrainSlicer.panel, SynthBrainSlicer.runs
        import SynthBrainSlicer.views, SynthBrainSlicer.saving
        from SynthBrainSlicer.panel import is_user_error
        from SynthBrainLib.errors import ConditionError
        assert is_user_error(ConditionError("x"))
        print("torch" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False"], f"torch imported: {done.stdout}"
