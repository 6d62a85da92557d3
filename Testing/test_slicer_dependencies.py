"""Installing SynthBrain's dependencies inside Slicer, with every installer call recorded.

The installers themselves (PyTorchUtils, the Extensions Manager, pip through Slicer) are recorded,
not skipped: each call's arguments - and the requirement and constraint files pip is handed, read
while they exist - are checked, and the recorder then makes the packages appear as installed so
the code's own check afterwards is exercised too.
"""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "SynthBrain"))

from SynthBrainSlicer.dependencies import (  # noqa: E402
    SLICER_SHIPPED,
    DependencyError,
    DependencyInstaller,
    PyTorchExtensionMissing,
    ensure_installed,
    read_requirements,
)

#: What a fresh Slicer 5.12 has: its own numpy, SimpleITK, vtk; no torch, no monai.
SLICER_512 = {"numpy": "2.4.6", "SimpleITK": "2.5.5", "vtk": "9.4.2", "packaging": "24.1"}


def _name(line: str) -> str:
    return re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0]


def _lowest(line: str) -> str:
    """The lowest version a requirement line allows ('monai>=1.4,<1.7' -> '1.4')."""
    found = re.search(r">=\s*([0-9][0-9.]*)", line)
    return found.group(1) if found else "1.0"


class RecordingSlicer:
    """``slicer`` as the installers see it; every call is recorded in ``calls``."""

    def __init__(
        self,
        versions: dict,
        *,
        packaging: bool = False,
        pytorch_extension: bool = True,
        pip_fails: bool = False,
        online: bool = True,
    ):
        self.versions, self.calls = versions, []
        self.pip_fails, self.online = pip_fails, online
        self.util = types.SimpleNamespace(pip_install=self._pip_install)
        self.app = types.SimpleNamespace(extensionsManagerModel=lambda: self.manager)
        self.manager = types.SimpleNamespace(
            isExtensionInstalled=lambda name: False,
            installExtensionFromServer=self._install_extension,
            interactive=True,
        )
        if packaging:
            self.packaging = types.SimpleNamespace(
                load_requirements=lambda path: Path(path).read_text().split(), pip_ensure=self._pip_ensure
            )
        self.pytorchUtils = (
            types.SimpleNamespace(PyTorchUtilsLogic=lambda: types.SimpleNamespace(installTorch=self._install_torch))
            if pytorch_extension
            else None
        )

    def _install(self, requirements: list[str]) -> None:
        for line in requirements:
            self.versions[_name(line)] = _lowest(line)

    def _pip_install(self, args):
        files = {flag: Path(args[args.index(flag) + 1]).read_text().split() for flag in ("-r", "-c") if flag in args}
        self.calls.append(("pip_install", list(args), files))
        if self.pip_fails:
            raise subprocess.CalledProcessError(
                1, ["PythonSlicer", "-m", "pip", "install"], "ERROR: Could not find a version that satisfies monai"
            )
        self._install(files.get("-r", []))

    def _pip_ensure(self, requirements, *, constraints, prompt_install, prompt_restart, requester, skip_in_testing):
        options = {"prompt_install": prompt_install, "prompt_restart": prompt_restart}
        options.update(requester=requester, skip_in_testing=skip_in_testing)
        self.calls.append(("pip_ensure", list(requirements), Path(constraints).read_text().split(), options))
        self._install(requirements)

    def _install_torch(self, **kwargs):
        self.calls.append(("installTorch", kwargs))
        self.versions["torch"] = "2.13.0"
        return types.SimpleNamespace(__version__="2.13.0")

    def _install_extension(self, name, restart=True):
        self.calls.append(("installExtensionFromServer", name, restart, self.manager.interactive))
        return self.online


def installer(fake: RecordingSlicer, loaded=(), **kwargs) -> DependencyInstaller:
    return DependencyInstaller(
        slicer=fake,
        pytorchUtils=fake.pytorchUtils,
        versions=fake.versions.get,
        loaded=lambda name: name in loaded,
        **kwargs,
    )


def test_requirements_file_names_neither_torch_nor_what_slicer_ships():
    names = {_name(r).lower() for r in read_requirements()}
    assert "torch" not in names, "torch comes through the PyTorch extension"
    assert names.isdisjoint(n.lower() for n in SLICER_SHIPPED), (
        f"Slicer ships {sorted(names & {n.lower() for n in SLICER_SHIPPED})}"
    )


def test_requirements_match_the_library_dependencies():
    block = re.search(r"^dependencies = \[(.*?)^\]", (REPO / "pyproject.toml").read_text(), re.S | re.M).group(1)
    library = {_name(r).lower() for r in re.findall(r'"([^"]+)"', block)}
    inside_slicer = {_name(r).lower() for r in read_requirements()} | {"torch"} | {n.lower() for n in SLICER_SHIPPED}
    assert library <= inside_slicer, (
        f"library dependencies nothing installs in Slicer: {sorted(library - inside_slicer)}"
    )


def test_fresh_slicer_gets_torch_from_pytorchutils_and_the_rest_from_pip_without_touching_slicers_packages():
    fake = RecordingSlicer(dict(SLICER_512))
    outcome = installer(fake).install()
    kinds = [call[0] for call in fake.calls]
    assert kinds == ["installTorch", "pip_install"], f"installer calls: {kinds}"
    assert fake.calls[0][1] == {"askConfirmation": False, "torchVersionRequirement": ">=2.10"}, fake.calls[0][1]
    _, args, files = fake.calls[1]
    installed = {_name(r).lower() for r in files["-r"]}
    assert "torch" not in installed, "pip never installs torch"
    assert installed.isdisjoint({"numpy", "simpleitk", "vtk"}), f"pip was asked for {sorted(installed)}"
    assert set(files["-c"]) == {"numpy==2.4.6", "SimpleITK==2.5.5", "vtk==9.4.2"}, (
        f"constraints pin Slicer's own versions: {files['-c']}"
    )
    assert fake.versions["numpy"] == "2.4.6", "Slicer's numpy is still there"
    assert installer(fake).missing() == [], "nothing is missing afterwards"
    assert not outcome.restartRequired, "nothing was loaded before: no restart"


def test_slicer_5_12_installs_through_pip_ensure_with_the_constraints():
    fake = RecordingSlicer(dict(SLICER_512, torch="2.13.0"), packaging=True)
    installer(fake).install()
    assert [c[0] for c in fake.calls] == ["pip_ensure"], fake.calls
    _, requirements, constraints, options = fake.calls[0]
    assert "numpy==2.4.6" in constraints, constraints
    expected = {"prompt_install": False, "prompt_restart": False, "requester": "SynthBrain", "skip_in_testing": False}
    assert options == expected, f"Slicer asks nothing itself: the module asked: {options}"


def test_nothing_is_installed_when_everything_is_there():
    fake = RecordingSlicer({"torch": "2.13.0", **{_name(r): _lowest(r) for r in read_requirements()}})
    assert ensure_installed(
        installer(fake), confirm=lambda q: pytest.fail(f"asked {q!r}"), showError=pytest.fail, restart=pytest.fail
    )
    assert fake.calls == [], "no installer was called"


def test_missing_pytorch_extension_is_installed_from_the_extensions_manager_then_slicer_restarts():
    fake = RecordingSlicer(dict(SLICER_512), pytorch_extension=False)
    questions, restarts = [], []
    ready = ensure_installed(
        installer(fake),
        confirm=lambda q: questions.append(q) or True,
        showError=pytest.fail,
        restart=lambda: restarts.append(True),
    )
    assert not ready, "not ready until Slicer has restarted"
    assert ("installExtensionFromServer", "PyTorch", False, False) in fake.calls, (
        f"installed without Slicer's own question (non-interactive), no restart by Slicer: {fake.calls}"
    )
    assert fake.manager.interactive is True, "the Extensions Manager is interactive again afterwards"
    assert "pip_install" not in [c[0] for c in fake.calls], "pip never stands in for the PyTorch extension"
    assert len(questions) == 3, f"asked to install, to add the extension, to restart: {questions}"
    assert restarts == [True], "Slicer restarts when the user agrees"


def test_declining_installs_nothing():
    fake = RecordingSlicer(dict(SLICER_512))
    assert not ensure_installed(installer(fake), confirm=lambda q: False, showError=pytest.fail, restart=pytest.fail)
    assert fake.calls == [], "no installer was called"


def test_offline_pip_failure_is_one_sentence_with_the_wheels_route():
    fake = RecordingSlicer(dict(SLICER_512, torch="2.13.0"), pip_fails=True)
    shown = []
    assert not ensure_installed(installer(fake), confirm=lambda q: True, showError=shown.append, restart=pytest.fail)
    message = str(shown[0])
    assert isinstance(shown[0], DependencyError), type(shown[0])
    assert "\n" not in message, "one line"
    assert "pip download -d wheels" in message, f"the offline route is given: {message}"
    assert "SYNTHBRAIN_WHEELS" in message, f"and where to put the wheels: {message}"


def test_offline_extension_download_says_what_to_do():
    fake = RecordingSlicer(dict(SLICER_512), pytorch_extension=False, online=False)
    with pytest.raises(PyTorchExtensionMissing):
        installer(fake).install()
    with pytest.raises(DependencyError, match="could not be downloaded .offline.*package file"):
        installer(fake).installPyTorchExtension()


def test_a_wheels_folder_installs_offline(tmp_path):
    fake = RecordingSlicer(dict(SLICER_512, torch="2.13.0"), packaging=True)
    installer(fake, wheelsDir=tmp_path).install()
    assert fake.calls[0][0] == "pip_install", "a wheels folder goes through pip with its own options"
    args = fake.calls[0][1]
    assert args[args.index("--find-links") + 1] == str(tmp_path), f"wheels from the folder: {args}"
    assert "--no-index" in args, f"and nothing from the internet: {args}"


def test_upgrading_a_package_that_is_already_imported_asks_for_a_restart():
    fake = RecordingSlicer(dict(SLICER_512, torch="2.13.0", monai="1.2.0"))  # too old, and imported by another module
    outcome = installer(fake, loaded={"monai"}).install()
    assert outcome.restartRequired, "the old monai stays in memory until Slicer restarts"


def test_an_old_scipy_is_upgraded_not_pinned():
    """scipy is pinned only where it already satisfies requirements.txt; an older one is left to pip."""
    fake = RecordingSlicer(dict(SLICER_512, torch="2.13.0", scipy="1.8.0"))
    installer(fake).install()
    _, args, files = fake.calls[0]
    assert not any(pin.lower().startswith("scipy") for pin in files["-c"]), f"scipy pinned: {files['-c']}"
    assert "scipy" in {_name(r).lower() for r in files["-r"]}, "and asked for"
