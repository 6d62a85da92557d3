"""The first-use install through Slicer's own installers: Slicer 5.12.3's ``slicer.packaging.pip_ensure``
and SlicerPyTorch's ``PyTorchUtilsLogic.installTorch``, run from ../shared/slicer-reference with only
pip itself (``packaging.pip_install``, light-the-torch's run) replaced. The user must see exactly one
question for each decision: install the packages, install the PyTorch extension, restart.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import slicer_app

pytestmark = pytest.mark.skipif(not slicer_app.REFERENCE.is_dir(), reason=slicer_app.REFERENCE_MISSING)

#: A requirement no environment has, so that Slicer's own pip_check finds it missing.
MISSING = "synthbrain-install-flow-test-package>=1.0"


class Recorder:
    """What reached pip and light-the-torch, and the versions they "installed"."""

    def __init__(self) -> None:
        self.calls: list = []
        self.versions: dict[str, str] = {"numpy": "2.4.6", "SimpleITK": "2.5.5", "vtk": "9.4.2"}

    def pip_install(self, requirements, constraints=None, **options):
        self.calls.append(("pip_install", list(requirements), options))
        for line in requirements:
            self.versions[line.split(">")[0].split("=")[0]] = "1.0"

    def run_module(self, name, args, *more, **options):
        self.calls.append((name, list(args)))
        self.versions["torch"] = "2.13.0"


@pytest.fixture
def flow(monkeypatch, mrml_app, tmp_path):
    """Slicer 5.12.3's packaging and SlicerPyTorch's PyTorchUtils, loaded for real; a DependencyInstaller
    on them whose requirements file asks for one package no environment has."""
    import slicer

    gui = slicer_app.install(monkeypatch, lambda: mrml_app.scene, release="5.12.3")
    recorder = Recorder()
    packaging = slicer_app.load_reference("packaging", "5.12.3")
    monkeypatch.setattr(slicer, "packaging", packaging, raising=False)
    monkeypatch.setattr(packaging, "pip_install", recorder.pip_install)  # pip itself
    monkeypatch.setattr(slicer.util, "_executePythonModule", recorder.run_module, raising=False)
    for name in ("light_the_torch", "light_the_torch._patch"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    spec = importlib.util.spec_from_file_location(
        "PyTorchUtils", slicer_app.REFERENCE / "SlicerPyTorch" / "PyTorchUtils.py"
    )
    pytorch_utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pytorch_utils)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(MISSING + "\n")
    from SynthBrainSlicer.dependencies import DependencyInstaller, ensure_installed

    def installer(torch_extension=True, loaded=()):
        return DependencyInstaller(
            slicer=slicer,
            pytorchUtils=pytorch_utils if torch_extension else None,
            versions=recorder.versions.get,
            requirementsFile=requirements,
            loaded=lambda name: name in loaded,
        )

    def run(installer):
        return ensure_installed(installer, slicer.util.confirmOkCancelDisplay, gui.dialogs.append, slicer.util.restart)

    return types.SimpleNamespace(gui=gui, recorder=recorder, installer=installer, run=run, slicer=slicer)


def questions(gui) -> list[str]:
    return [text for kind, text in gui.dialogs if kind in ("confirmOkCancelDisplay", "confirmYesNoDisplay")]


def test_a_fresh_slicer_asks_once_then_installs_torch_and_the_packages_without_further_questions(flow):
    assert flow.run(flow.installer()), "ready afterwards"
    assert len(questions(flow.gui)) == 1, f"one question, ours: {questions(flow.gui)}"
    assert "Install them now?" in questions(flow.gui)[0], questions(flow.gui)
    ltt, pip = flow.recorder.calls
    assert ltt == ("light_the_torch", ["install", "torch>=2.10", "torchvision"]), f"installTorch ran ltt: {ltt}"
    assert pip[1] == [MISSING], f"pip_ensure handed pip only what is missing: {pip}"
    assert ("restart", None) not in flow.gui.dialogs, "nothing loaded was upgraded: no restart"


def test_upgrading_an_imported_package_asks_about_the_restart_once(flow):
    assert not flow.run(flow.installer(loaded={"synthbrain-install-flow-test-package"})), "not ready until restart"
    asked = questions(flow.gui)
    assert len(asked) == 2, f"install? and restart?, each once (Slicer's own restart prompt is off): {asked}"
    assert "restart" in asked[1].lower(), asked
    assert flow.gui.dialogs[-1] == ("restart", None), "Slicer restarts when the user agrees"


def test_a_missing_pytorch_extension_is_one_more_question_and_slicer_asks_nothing(flow):
    manager = types.SimpleNamespace(interactive=True, calls=[])

    def install_from_server(name, restart=True, update=False):
        manager.calls.append((name, restart, manager.interactive))
        return True

    manager.isExtensionInstalled = lambda name: False
    manager.installExtensionFromServer = install_from_server
    flow.slicer.app.extensionsManagerModel = lambda: manager
    assert not flow.run(flow.installer(torch_extension=False)), "Slicer must restart first"
    asked = questions(flow.gui)
    assert len(asked) == 3, f"install? extension? restart?, each once: {asked}"
    assert manager.calls == [("PyTorch", False, False)], (
        f"Slicer's manager installs without its own 'Install extension?' and without restarting: {manager.calls}"
    )
    assert manager.interactive is True, "the manager is interactive again afterwards"


def test_declining_the_extension_is_not_reported_as_a_failure(flow):
    answers = iter([True, False])
    flow.gui.answer = None
    flow.slicer.util.confirmOkCancelDisplay = lambda text, *a, **k: (
        flow.gui.dialogs.append(("confirm", text)) or next(answers)
    )
    flow.slicer.app.extensionsManagerModel = lambda: pytest.fail("nothing is installed after a no")
    assert not flow.run(flow.installer(torch_extension=False)), "not ready"
    errors = [entry for entry in flow.gui.dialogs if not isinstance(entry, tuple)]
    assert errors == [], f"a no is not an error (no 'offline?'): {errors}"
