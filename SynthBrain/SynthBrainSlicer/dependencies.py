"""Installing the Python packages SynthBrain needs inside Slicer, the way SlicerTotalSegmentator and
SlicerNNUnet do it.

* **torch only through the PyTorch extension** (``PyTorchUtils``): it picks the build that fits the
  GPU driver, where a plain ``pip install torch`` pulls a multi-GB CUDA build that may not. When the
  extension is missing it is installed from the Extensions Manager, and Slicer must restart.
* **Nothing Slicer ships is installed over Slicer's own copy** (numpy, SimpleITK, vtk, and scipy
  where present): PyPI's SimpleITK replaced Slicer's and broke ``sitkUtils`` (Slicer #6711, #7661),
  and a numpy of another major version breaks compiled modules. They are not in requirements.txt,
  and pip gets a constraints file that pins each to the version Slicer has, so no dependency can
  pull another version either.
* **The rest with Slicer's own installer**: ``slicer.packaging.pip_ensure`` (Slicer 5.12), else
  ``slicer.util.pip_install`` (Slicer 5.10).
* **One question per decision**: the module asks (install the packages? install the PyTorch
  extension? restart?) and Slicer's installers are called so that they do not ask again:
  ``pip_ensure(prompt_install=False, prompt_restart=False)``, ``installTorch(askConfirmation=False)``,
  and the Extensions Manager switched to non-interactive for ``installExtensionFromServer`` (which
  otherwise asks "Install extension?" itself, and reports a refusal and a failed download alike).
* **Offline**: a folder of wheels (``SYNTHBRAIN_WHEELS``, or ``Resources/wheels`` beside the module)
  is used with ``--no-index --find-links``; made on a connected machine with
  ``pip download -d wheels -r SynthBrain/Resources/requirements.txt``.

Nothing here shows a dialog: the module widget asks, then calls :meth:`DependencyInstaller.install`.
Every failure is a :class:`DependencyError` whose message is one sentence for the user.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .i18n import _

MODULE_DIR = Path(__file__).resolve().parent.parent
REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"
DEFAULT_WHEELS_DIR = MODULE_DIR / "Resources" / "wheels"
#: torch comes from the PyTorch extension (right CUDA build), never from requirements.txt.
TORCH_REQUIREMENT = "torch>=2.10"  # weights_only loading is bypassable below (CVE-2025-32434, CVE-2026-24747)
#: Packages every Slicer ships: never in requirements.txt, never installed or upgraded by SynthBrain.
SLICER_SHIPPED = ("numpy", "SimpleITK", "vtk")
#: Pinned to the installed version when present (scipy: shipped by some Slicer builds, needed by SynthBrain).
PINNED_IF_PRESENT = (*SLICER_SHIPPED, "scipy")
PYTORCH_EXTENSION = "PyTorch"


class DependencyError(RuntimeError):
    """A dependency could not be installed; the message is one sentence for the user."""


class PyTorchExtensionMissing(DependencyError):
    """torch is needed and the PyTorch extension that installs it is not there."""


@dataclass
class InstallOutcome:
    """What :meth:`DependencyInstaller.install` did."""

    installed: list[str] = field(default_factory=list)
    restartRequired: bool = False


def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of a requirements.txt (comments, blank lines and pip options skipped)."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def _name(requirement: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(requirement).name


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


class DependencyInstaller:
    """Checks and installs SynthBrain's Python dependencies in Slicer's Python.

    Args:
        slicer: the ``slicer`` module (default: imported when needed). Its ``util.pip_install``,
            ``packaging`` (Slicer 5.12) and ``app.extensionsManagerModel()`` are the installers used.
        pytorchUtils: the ``PyTorchUtils`` module (default: imported; None when the extension is missing).
        versions: ``versions(name) -> installed version or None`` (default: importlib.metadata).
        requirementsFile: the module's requirements.txt (torch and Slicer's packages are not in it).
        wheelsDir: a folder of wheels for offline installs (default: ``SYNTHBRAIN_WHEELS`` or
            ``Resources/wheels`` when it exists).
        loaded: ``loaded(name)`` whether a package is already imported in this process (then an
            upgrade needs a restart); default: looks in ``sys.modules``.
    """

    def __init__(
        self,
        slicer=None,
        pytorchUtils: Any = None,
        versions: Callable[[str], str | None] | None = None,
        requirementsFile: Path = REQUIREMENTS_FILE,
        wheelsDir: Path | None = None,
        loaded: Callable[[str], bool] | None = None,
    ) -> None:
        self._loaded = loaded or (lambda name: name.lower() in sys.modules or name in sys.modules)
        self._slicer = slicer
        self._pytorchUtils = pytorchUtils
        self._versions = versions or _installed_version
        self.requirementsFile = Path(requirementsFile)
        env = os.environ.get("SYNTHBRAIN_WHEELS")
        self.wheelsDir = (
            Path(wheelsDir)
            if wheelsDir
            else Path(env)
            if env
            else (DEFAULT_WHEELS_DIR if DEFAULT_WHEELS_DIR.is_dir() else None)
        )

    # ---- what is missing ----------------------------------------------------------------------
    def requirements(self) -> list[str]:
        """torch first, then requirements.txt."""
        return [TORCH_REQUIREMENT, *read_requirements(self.requirementsFile)]

    def satisfied(self, requirement: str) -> bool:
        from packaging.requirements import Requirement

        req = Requirement(requirement)
        if req.marker is not None and not req.marker.evaluate():
            return True
        version = self._versions(req.name)
        return version is not None and req.specifier.contains(version, prereleases=True)

    def missing(self) -> list[str]:
        """Requirements (torch first) that Slicer's Python does not satisfy yet."""
        return [r for r in self.requirements() if not self.satisfied(r)]

    def constraints(self) -> list[str]:
        """``name==version`` for each package Slicer ships that is installed: pip may not replace them.

        A package that is also a requirement and whose installed version does not satisfy it (an
        old scipy) is left to pip: pinning it would make the install impossible.
        """
        wanted = {_name(r).lower(): r for r in self.requirements()}
        pins = []
        for name in PINNED_IF_PRESENT:
            version = self._versions(name)
            if version is None or (name.lower() in wanted and not self.satisfied(wanted[name.lower()])):
                continue
            pins.append(f"{name}=={version}")
        return pins

    # ---- installing -----------------------------------------------------------------------------
    @property
    def slicer(self):
        if self._slicer is None:
            import slicer

            self._slicer = slicer
        return self._slicer

    def pytorchUtils(self):
        if self._pytorchUtils is None:
            try:
                self._pytorchUtils = importlib.import_module("PyTorchUtils")
            except ModuleNotFoundError:
                return None
        return self._pytorchUtils

    def install(self) -> InstallOutcome:
        """Install whatever is missing: torch through PyTorchUtils, the rest with pip (constrained).

        Raises:
            PyTorchExtensionMissing: torch is missing and so is the PyTorch extension; call
                :meth:`installPyTorchExtension` (after asking the user), then restart Slicer.
            DependencyError: an installer failed (offline, proxy, ...); the message says what to do.
        """
        outcome = InstallOutcome()
        missing = self.missing()
        if any(_name(r) == "torch" for r in missing):
            self._installTorch()
            outcome.installed.append("torch")
        others = [r for r in missing if _name(r) != "torch"]
        if others:
            loaded = {_name(r) for r in others if self._loaded(_name(r))}
            self._pipInstall(others)
            outcome.installed.extend(_name(r) for r in others)
            # An upgraded package that was already imported keeps its old code until a restart.
            outcome.restartRequired = bool(loaded)
        importlib.invalidate_caches()
        still = self.missing()
        if still:
            outcome.restartRequired = True
        return outcome

    def _installTorch(self) -> None:
        utils = self.pytorchUtils()
        if utils is None:
            raise PyTorchExtensionMissing(
                _("SynthBrain needs PyTorch, which is installed by the PyTorch extension; install that extension first")
            )
        specifier = TORCH_REQUIREMENT[len("torch") :]
        try:
            torch = utils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=specifier)
        except Exception as exc:  # light-the-torch/pip failures: offline, proxy, no matching build
            raise DependencyError(
                _(
                    "PyTorch could not be installed ({reason}); check the internet connection or proxy, "
                    "or install torch with the PyTorch module's own panel"
                ).format(reason=_first_line(exc))
            ) from exc
        if torch is None:
            raise DependencyError(_("PyTorch was not installed (cancelled)"))

    def installPyTorchExtension(self) -> InstallOutcome:
        """Install the PyTorch extension from the Extensions Manager; Slicer must restart afterwards."""
        app = getattr(self.slicer, "app", None)
        manager = app.extensionsManagerModel() if app is not None and hasattr(app, "extensionsManagerModel") else None
        if manager is None:
            raise DependencyError(_("this Slicer has no Extensions Manager; install the PyTorch extension by hand"))
        if manager.isExtensionInstalled(PYTORCH_EXTENSION):
            return InstallOutcome(installed=[], restartRequired=True)
        # The user has said yes in our dialog: Slicer's manager must not ask "Install extension?"
        # again (it does when interactive), so that False below can only mean the download failed.
        interactive = getattr(manager, "interactive", None)
        if interactive is not None:
            manager.interactive = False
        try:
            installed = manager.installExtensionFromServer(PYTORCH_EXTENSION, False)
        finally:
            if interactive is not None:
                manager.interactive = interactive
        if not installed:
            raise DependencyError(
                _(
                    "the PyTorch extension could not be downloaded (offline?); install it from a package file "
                    "in the Extensions Manager, then restart Slicer"
                )
            )
        return InstallOutcome(installed=[PYTORCH_EXTENSION], restartRequired=True)

    def _pipInstall(self, requirements: list[str]) -> None:
        with tempfile.TemporaryDirectory(prefix="synthbrain-pip-") as folder:
            constraints = Path(folder) / "constraints.txt"
            constraints.write_text("".join(f"{pin}\n" for pin in self.constraints()), encoding="utf-8")
            wanted = Path(folder) / "requirements.txt"
            wanted.write_text("".join(f"{r}\n" for r in requirements), encoding="utf-8")
            try:
                self._runPip(wanted, constraints)
            except Exception as exc:  # pip's CalledProcessError, InstallationAbortedError, ...
                names = ", ".join(_name(r) for r in requirements)
                where = self.wheelsDir or DEFAULT_WHEELS_DIR
                raise DependencyError(
                    _(
                        "pip could not install {names} ({reason}); without internet, download the wheels on a "
                        "connected computer (pip download -d wheels -r requirements.txt) and put them in {folder} "
                        "or set SYNTHBRAIN_WHEELS"
                    ).format(names=names, reason=_first_line(exc), folder=where)
                ) from exc

    def _runPip(self, requirements: Path, constraints: Path) -> None:
        offline = ["--no-index", "--find-links", str(self.wheelsDir)] if self.wheelsDir else []
        packaging = self._slicerPackaging()
        if packaging is not None and not offline:
            # The user agreed in the module's own dialog and the module asks about restarting
            # itself: Slicer must not ask either again. The self-test needs the packages, so
            # install in testing mode too.
            packaging.pip_ensure(
                packaging.load_requirements(str(requirements)),
                constraints=str(constraints),
                prompt_install=False,
                prompt_restart=False,
                requester="SynthBrain",
                skip_in_testing=False,
            )
        else:
            self.slicer.util.pip_install(["-r", str(requirements), "-c", str(constraints), *offline])

    def _slicerPackaging(self):
        """``slicer.packaging`` (Slicer 5.12: ``pip_ensure``), or None (Slicer 5.10)."""
        module = getattr(self.slicer, "packaging", None)
        if module is None and getattr(self.slicer, "__name__", "") == "slicer":
            module = _optional("slicer.packaging")
        return module if module is not None and hasattr(module, "pip_ensure") else None


def _optional(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def ensure_installed(
    installer: DependencyInstaller,
    confirm: Callable[[str], bool],
    showError: Callable[[BaseException], None],
    restart: Callable[[], None],
) -> bool:
    """The first-use conversation, without Qt: True when everything is there (now or already).

    Asks ``confirm(question)`` before installing anything; when the PyTorch extension is missing,
    asks again and installs it from the Extensions Manager; when Slicer must restart, asks and
    calls ``restart()``. Failures go to ``showError`` (one sentence) and give False.
    """
    missing = installer.missing()
    if not missing:
        return True
    if not confirm(
        _(
            "SynthBrain needs Python packages that are not installed yet: {names}. Install them now? "
            "PyTorch comes through the PyTorch extension and can take minutes."
        ).format(names=", ".join(missing))
    ):
        return False
    try:
        try:
            outcome = installer.install()
        except PyTorchExtensionMissing:
            if not confirm(
                _(
                    "PyTorch is installed by the PyTorch extension, which is missing. Install it from the "
                    "Extensions Manager now? Slicer must restart afterwards."
                )
            ):
                return False
            outcome = installer.installPyTorchExtension()
    except DependencyError as exc:  # one sentence: offline, proxy, cancelled
        showError(exc)
        return False
    if outcome.restartRequired:
        if confirm(_("Slicer must restart to finish installing SynthBrain's packages. Restart now?")):
            restart()
        return False
    return True
