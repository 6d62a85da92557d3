"""Every package the library imports at run time is a declared dependency of the package.

A newcomer installs ``synthbrain`` with its dependencies only (``.ci/setup`` without ``--test``, or
``pip install synthbrain``): an import satisfied only by a test extra (scipy was) crashes the main
job there, while the test suite, which installs the extras, passes. This reads every import of
``SynthBrainLib`` (module level and inside functions) and compares the third-party ones with
``pyproject.toml``'s ``[project] dependencies``.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
LIB = REPO / "SynthBrainLib"
FIRST_PARTY = {"SynthBrainLib", "synthbrain_demo_models"}
#: Library modules whose imports belong to a developer extra, not to the user's package.
DEVELOPER_PARTS = ("tools",)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies(pyproject: Path = REPO / "pyproject.toml") -> set[str]:
    """Distribution names in ``[project] dependencies`` (normalised)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return {_normal(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in project["dependencies"]}


def runtime_modules(paths) -> dict[str, set[str]]:
    """Top-level third-party modules imported by ``paths`` -> the files importing each."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY and top != "__future__":
                    found.setdefault(top, set()).add(_shown(path))
    return found


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def library_files():
    return [p for p in LIB.rglob("*.py") if p.relative_to(LIB).parts[0] not in DEVELOPER_PARTS]


def undeclared(modules: dict[str, set[str]], declared: set[str]) -> dict[str, list[str]]:
    """Imported modules no declared distribution provides -> where they are imported."""
    providers = metadata.packages_distributions()
    missing = {}
    for module, files in modules.items():
        distributions = {_normal(d) for d in providers.get(module, [module])}
        if not distributions & declared:
            missing[module] = sorted(files)
    return missing


def test_every_runtime_import_is_a_declared_dependency():
    missing = undeclared(runtime_modules(library_files()), declared_dependencies())
    assert missing == {}, (
        "imported by the library but not in pyproject.toml [project] dependencies (a fresh install crashes): "
        + "; ".join(f"{m} in {', '.join(f)}" for m, f in sorted(missing.items()))
    )


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "late.py"
    source.write_text("def f():\n    import scipy.ndimage\n    from nibabel import load\n")
    modules = runtime_modules([source])
    assert set(modules) == {"scipy", "nibabel"}, f"imports inside functions are read: {modules}"
    assert set(undeclared(modules, {"nibabel"})) == {"scipy"}, "scipy is reported when only nibabel is declared"


def test_the_check_fails_on_a_pyproject_without_scipy(tmp_path):
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    kept = [r for r in project["dependencies"] if not r.startswith("scipy")]
    trimmed = tmp_path / "pyproject.toml"
    trimmed.write_text("[project]\ndependencies = [" + ", ".join(f'"{r}"' for r in kept) + "]\n")
    declared = declared_dependencies(trimmed)
    assert "scipy" not in declared, "the trimmed pyproject lacks scipy in [project] dependencies"
    missing = undeclared(runtime_modules(library_files()), declared)
    assert "scipy" in missing, f"a pyproject without scipy is caught: {missing}"
