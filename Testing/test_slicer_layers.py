"""The Slicer module's structure, read from its import graph: one Qt module (the panel widget and the
module logic), a logic that never reaches the panel, and rooms a newcomer can read."""

from __future__ import annotations

import ast
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parent.parent / "SynthBrain"
PACKAGE = MODULE_DIR / "SynthBrainSlicer"
#: The panel's side: the Qt widget and its parameter node, the panel's rules and its runs.
PANEL = {"application", "parameters", "panel", "runs", "modality_panel"}
#: What console scripts use: the logic and everything it builds on.
LOGIC_SIDE = {
    "logic",
    "brain_tasks",
    "image_tasks",
    "modality_tasks",
    "modality_calls",
    "painting",
    "settings",
    "tasks",
    "scene",
    "saving",
}


def sibling_imports(path: Path) -> set[str]:
    """SynthBrainSlicer modules ``path`` imports (``from . import x``, ``from .x import y``, absolute too)."""
    found = set()
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 or base.startswith("SynthBrainSlicer"):
                base = base.removeprefix("SynthBrainSlicer").lstrip(".")
                found |= {base.split(".")[0]} if base else {a.name for a in node.names}
    return found & modules


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        for target in sibling_imports(PACKAGE / f"{name}.py") - seen:
            seen.add(target)
            todo.append(target)
    return seen


def imports_qt(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        if any(n.split(".")[0] in ("qt", "ctk", "PythonQt") for n in names):
            return True
    return False


def test_the_logic_never_reaches_the_panel():
    for name in LOGIC_SIDE:
        assert reachable(name) & PANEL == set(), f"{name} imports the panel's side: {sorted(reachable(name) & PANEL)}"


def test_only_the_application_module_imports_qt():
    users = sorted(p.name for p in PACKAGE.glob("*.py") if imports_qt(p))
    assert users == ["application.py"], f"Qt is imported by {users}"


def test_rooms_stay_small():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.glob("*.py")}
    assert max(sizes.values()) <= 600, f"files over 600 lines: {[n for n, s in sizes.items() if s > 600]}"
    module_file = len((MODULE_DIR / "SynthBrain.py").read_text(encoding="utf-8").splitlines())
    assert module_file < 400, f"SynthBrain.py has {module_file} lines"
