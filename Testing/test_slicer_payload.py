"""What the Slicer extension installs, read from SynthBrain/CMakeLists.txt, against what the module
needs at run time: every SynthBrainLib module it imports (followed through the library's own
imports, including those inside functions) and every model folder it opens - nothing missing, and no
developer tool shipped."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODULE_DIR = REPO / "SynthBrain"
CMAKE = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")


def cmake_list(name: str) -> list[str]:
    body = re.search(rf"set\({name}\s+(.*?)\)", CMAKE, re.S).group(1)
    return [item.replace("${MODULE_NAME}", "SynthBrain") for item in body.split()]


def shipped_library_files() -> set[str]:
    """The GLOB_RECURSE patterns and the skip regex of the CMake file, evaluated on the tree."""
    block = re.search(
        r"file\(GLOB_RECURSE _synthbrain_shipped_files RELATIVE \$\{_synthbrain_root\} CONFIGURE_DEPENDS(.*?)\)",
        CMAKE,
        re.S,
    ).group(1)
    patterns = [p.replace("${_synthbrain_root}/", "") for p in block.split()]
    skip = re.search(r'if\(_file MATCHES "(.*?)"\)', CMAKE).group(1).replace("\\\\", "\\")
    files = set()
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO).as_posix()
        if path.is_file() and any(fnmatch.fnmatch(rel, p) for p in patterns) and not re.search(skip, rel):
            files.add(rel)
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: str) -> set[str]:
    """Absolute names of the SynthBrainLib modules a file imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # "from . import bench" imports a module
    return {name for name in found if name == "SynthBrainLib" or name.startswith("SynthBrainLib.")}


def file_of(name: str) -> Path | None:
    path = REPO / Path(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def needed_library_files() -> set[str]:
    """SynthBrainLib files reachable from the module's scripts, with the packages they live in."""
    starts = [MODULE_DIR / "SynthBrain.py", *sorted((MODULE_DIR / "SynthBrainSlicer").glob("*.py"))]
    todo = [(p, "SynthBrainSlicer" if p.parent.name == "SynthBrainSlicer" else "") for p in starts]
    seen: set[Path] = set()
    while todo:
        path, package = todo.pop()
        for name in imports_of(path, package):
            parts = name.split(".")
            for k in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                target = file_of(".".join(parts[:k]))
                if target is not None and target not in seen:
                    seen.add(target)
                    todo.append(
                        (
                            target,
                            module_name(target)
                            if target.name == "__init__.py"
                            else module_name(target).rsplit(".", 1)[0],
                        )
                    )
    return {p.relative_to(REPO).as_posix() for p in seen}


def test_every_library_module_the_module_imports_is_shipped():
    needed, shipped = needed_library_files(), shipped_library_files()
    assert "SynthBrainLib/pipelines/latent_diffusion.py" in needed, "the import graph reaches the pipelines"
    assert needed - shipped == set(), f"imported by the module but not installed: {sorted(needed - shipped)}"


def test_the_built_in_cards_and_every_demo_model_file_are_shipped():
    shipped = shipped_library_files()
    cards = {p.relative_to(REPO).as_posix() for p in (REPO / "SynthBrainLib" / "models" / "cards").glob("*.json")}
    assert cards and cards <= shipped, f"built-in cards not installed: {sorted(cards - shipped)}"
    models = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "Resources" / "Models").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert models - shipped == set(), f"demo model files not installed: {sorted(models - shipped)}"


def test_no_developer_tool_is_shipped():
    shipped = shipped_library_files()
    tools = sorted(f for f in shipped if f.startswith(("devtools/", "synthbrain_dev/")) or "/tools/" in f)
    assert tools == [], f"developer tools in the extension: {tools}"
    assert all(f.startswith(("SynthBrainLib/", "Resources/Models/")) for f in shipped), "only the library and models"


def test_the_module_needs_no_developer_tool():
    imports = set()
    for path in [MODULE_DIR / "SynthBrain.py", *(MODULE_DIR / "SynthBrainSlicer").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imports.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imports |= {a.name.split(".")[0] for a in node.names}
    assert "synthbrain_dev" not in imports, "the Slicer module imports the developer tools"


def test_module_scripts_and_resources_exist():
    for item in cmake_list("MODULE_PYTHON_SCRIPTS") + cmake_list("MODULE_PYTHON_RESOURCES"):
        assert (MODULE_DIR / item).is_file(), f"CMake installs {item}, which does not exist"
