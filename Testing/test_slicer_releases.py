"""The Slicer releases SynthBrain supports (5.10 and newer), checked against Slicer's own files of each.

* On Slicer 5.8 (Python 3.9) the module loads, says why it cannot run in one line, and installs
  nothing: Slicer 5.10.0's own ScriptedLoadableModule and parameterNodeWrapper with a Python 3.9
  version stub, and the files that load there compiled by a real Python 3.9 where one is installed.
* On 5.10.0 and 5.12.3 the panel opens and binds under that release's own code.
* Every ``slicer.util``, ``slicer.packaging``, ``slicer.parameterNodeWrapper``,
  ``slicer.ScriptedLoadableModule`` and ``PyTorchUtils`` name the module uses exists in the reference
  files of each supported release.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import slicer_app

pytestmark = pytest.mark.skipif(not slicer_app.REFERENCE.is_dir(), reason=slicer_app.REFERENCE_MISSING)

MODULE_DIR = slicer_app.MODULE_DIR
SUPPORTED = ("5.10.0", "5.12.3")
PYTORCH_UTILS = slicer_app.REFERENCE / "SlicerPyTorch" / "PyTorchUtils.py"


def module_files() -> list[Path]:
    return [MODULE_DIR / "SynthBrain.py", *sorted((MODULE_DIR / "SynthBrainSlicer").glob("*.py"))]


def defined_names(path: Path) -> set[str]:
    """Names a Python file defines at its top level (functions, classes, assignments, imports)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.names[0].name == "*":
            names |= defined_names(path.parent / f"{node.module}.py")  # a package's "from .x import *"
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def used_names(module: str, local: str | None = None) -> set[str]:
    """Names the module files take from ``slicer.<module>``: ``slicer.<module>.X``, ``from slicer.<module>
    import X``, and ``<local>.X`` where ``local`` is the variable the code holds that module in."""
    found = set()
    for path in module_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == f"slicer.{module}":
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.Attribute):
                owner = ast.unparse(node.value)
                if owner == f"slicer.{module}" or (local is not None and owner == local):
                    found.add(node.attr)
    return found


@pytest.mark.parametrize("release", SUPPORTED)
def test_every_slicer_util_name_the_module_uses_exists_in_the_release(release):
    used = used_names("util") | used_names("util", local="self.slicer.util")
    assert {"pip_install", "loadUI", "VTKObservationMixin", "errorDisplay"} <= used, f"the scan sees the calls: {used}"
    missing = used - defined_names(slicer_app.REFERENCE_SLICER[release] / "util.py")
    assert missing == set(), f"slicer.util of Slicer {release} lacks {sorted(missing)}"


@pytest.mark.parametrize("release", SUPPORTED)
def test_the_base_classes_translation_and_parameter_wrapper_names_exist_in_the_release(release):
    folder = slicer_app.REFERENCE_SLICER[release]
    for module, path in (
        ("ScriptedLoadableModule", folder / "ScriptedLoadableModule.py"),
        ("i18n", folder / "i18n.py"),
        ("parameterNodeWrapper", folder / "parameterNodeWrapper" / "__init__.py"),
    ):
        used = used_names(module)
        assert used, f"the module uses slicer.{module}"
        missing = used - defined_names(path)
        assert missing == set(), f"slicer.{module} of Slicer {release} lacks {sorted(missing)}"


def test_the_packaging_names_exist_in_5_12_and_5_10_has_the_fallback():
    used = used_names("packaging", local="packaging")
    assert {"pip_ensure", "load_requirements"} <= used, f"the 5.12 installer path: {used}"
    packaging = slicer_app.REFERENCE_SLICER["5.12.3"] / "packaging.py"
    assert used - defined_names(packaging) == set(), (
        f"slicer.packaging of 5.12.3 lacks {used - defined_names(packaging)}"
    )
    assert not (slicer_app.REFERENCE_SLICER["5.10.0"] / "packaging.py").exists(), "5.10 has no slicer.packaging"
    assert "pip_install" in defined_names(slicer_app.REFERENCE_SLICER["5.10.0"] / "util.py"), "its pip_install is there"


def test_the_pytorch_utils_names_exist_in_slicerpytorch():
    tree = ast.parse(PYTORCH_UTILS.read_text(encoding="utf-8"))
    logic = next(c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "PyTorchUtilsLogic")
    methods = {f.name: f for f in logic.body if isinstance(f, ast.FunctionDef)}
    used = used_names("__never__", local="utils.PyTorchUtilsLogic()")
    assert used == {"installTorch"}, f"the module calls: {used}"
    arguments = {a.arg for a in methods["installTorch"].args.args}
    assert {"askConfirmation", "torchVersionRequirement"} <= arguments, f"installTorch takes {arguments}"


def _python39_stub():
    return (3, 9, 10, "final", 0)


def test_slicer_5_8_loads_the_module_says_why_in_one_line_and_installs_nothing(monkeypatch, mrml_app):
    """Slicer 5.10.0's own files, reporting itself as 5.8 with Python 3.9."""
    import slicer

    gui = slicer_app.install(monkeypatch, lambda: mrml_app.scene, release="5.10.0", slicer_version=(5, 8))
    installs = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a, **k: installs.append(("pip_install", a)), raising=False)
    torch_utils = types.ModuleType("PyTorchUtils")
    torch_utils.PyTorchUtilsLogic = lambda: pytest.fail("PyTorchUtils was used on an unsupported Slicer")
    monkeypatch.setitem(sys.modules, "PyTorchUtils", torch_utils)
    monkeypatch.setattr(sys, "version_info", _python39_stub())
    module = slicer_app.import_module_file(monkeypatch)
    reason = module.UNSUPPORTED
    assert reason is not None, "Slicer 5.8 is refused"
    assert "\n" not in reason, "one line"
    assert "Slicer 5.10 or newer" in reason and "Python 3.9" in reason, reason
    assert "SynthBrainSlicer.application" not in sys.modules, "the panel and its dependencies were never imported"
    parent = slicer_app.module_panel_parent()
    widget = module.SynthBrainWidget(parent)
    widget.setup()
    labels = [w for w in parent.layout().widgets if isinstance(w, slicer_app.QLabel)]
    assert [label.text for label in labels] == [reason], "the panel shows that one line"
    assert installs == [] and gui.dialogs == [], f"nothing was installed or asked: {installs}, {gui.dialogs}"


@pytest.mark.parametrize("version, expected", [((3, 9, 10), False), ((3, 10, 0), True), ((3, 12, 10), True)])
def test_the_gate_follows_python_and_slicer_versions(version, expected):
    sys.path.insert(0, str(MODULE_DIR))
    from SynthBrainSlicer.compatibility import unsupported_reason

    assert (unsupported_reason(version) is None) is expected, f"Python {version}"
    assert unsupported_reason((3, 12, 10), (5, 8)) is not None, "a Slicer 5.8 built with a newer Python is refused too"
    assert unsupported_reason((3, 12, 10), (5, 12)) is None, "Slicer 5.12 runs"


def _python39():
    """A real Python 3.9 (pyenv keeps one on these machines), or None."""
    candidates = [shutil.which("python3.9"), *sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python3.9"))]
    for candidate in filter(None, candidates):
        if subprocess.run([str(candidate), "-V"], capture_output=True).returncode == 0:
            return str(candidate)
    return None


PYTHON39 = _python39()


@pytest.mark.skipif(PYTHON39 is None, reason="no Python 3.9 on this machine to compile with")
def test_what_loads_on_slicer_5_8_compiles_and_runs_on_a_real_python_3_9():
    files = [MODULE_DIR / "SynthBrain.py"] + [
        MODULE_DIR / "SynthBrainSlicer" / n for n in ("compatibility.py", "i18n.py")
    ]
    for path in files:
        done = subprocess.run([PYTHON39, "-m", "py_compile", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"{path.name} does not compile on Python 3.9: {done.stderr[-500:]}"
    gate = "from SynthBrainSlicer.compatibility import unsupported_reason; print(unsupported_reason())"
    done = subprocess.run([PYTHON39, "-c", gate], capture_output=True, text=True, cwd=MODULE_DIR)
    assert done.returncode == 0, f"the gate runs on Python 3.9: {done.stderr[-500:]}"
    assert "Python 3.9" in done.stdout, f"and refuses it: {done.stdout}"


@pytest.mark.parametrize("release", SUPPORTED)
def test_the_panel_opens_and_binds_under_each_supported_release(monkeypatch, mrml_app, tiny_store, release):
    with slicer_app.opened_panel(monkeypatch, mrml_app, tiny_store, release=release) as panel:
        assert panel.gui.dialogs == [], f"Slicer {release}: opening the panel showed {panel.gui.dialogs}"
        assert panel.widget._parameterNodeGuiTag is not None, f"Slicer {release}: connectGui returned a tag"
        panel.ui.ageSlider.value = 70.0
        assert panel.parameters.conditions.age == 70.0, f"Slicer {release}: the age slider is bound"
