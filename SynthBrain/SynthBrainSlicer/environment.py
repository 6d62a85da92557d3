"""Where SynthBrainLib and the demo models are, and the Python packages they need inside Slicer.

Two layouts are supported, with the same code:

* **Installed extension** (Extensions Manager, or a build tree): CMake copies ``SynthBrainLib/`` and
  ``Resources/Models/`` beside the module scripts, into ``lib/Slicer-X.Y/qt-scripted-modules/``,
  which Slicer already has on ``sys.path``.
* **Source checkout** (the repository's ``SynthBrain/`` folder added as an additional module
  path): ``SynthBrainLib/`` and ``Resources/Models/`` are in the repository root, one level up; the
  root is put on ``sys.path``.

Nothing here imports SynthBrainLib, torch or Qt, so the module loads before its dependencies are
installed.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

#: Folder of SynthBrain.py (and of Resources/).
MODULE_DIR = Path(__file__).resolve().parent.parent
REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"
#: torch comes from the PyTorch extension (right CUDA build), never from requirements.txt.
TORCH_REQUIREMENT = "torch>=2.3"


class DependencyError(RuntimeError):
    """A dependency could not be installed; the message is one sentence for the user."""


def library_roots() -> list[Path]:
    """Folders that may contain the SynthBrainLib package, in order of preference."""
    return [MODULE_DIR, MODULE_DIR.parent]


def library_root() -> Path | None:
    for root in library_roots():
        if (root / "SynthBrainLib" / "__init__.py").is_file():
            return root
    return None


def ensure_library_on_path() -> Path | None:
    """Make ``import SynthBrainLib`` find the copy that ships with this module; returns its folder.

    The shipped copy goes first on ``sys.path`` so that it wins over another SynthBrainLib that may
    be pip-installed in Slicer's Python (a different version would not match this module).
    """
    root = library_root()
    if root is None:
        logging.warning("SynthBrain: the SynthBrainLib package was not found next to %s", MODULE_DIR)
        return None
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def shipped_model_dirs() -> list[Path]:
    """``Resources/Models`` folders of this module (installed) and of the repository (checkout)."""
    dirs = []
    for root in library_roots():
        folder = root / "Resources" / "Models"
        if folder.is_dir() and folder not in dirs:
            dirs.append(folder)
    return dirs


# ----------------------------------------------------------------------------------------------
# Python dependencies
# ----------------------------------------------------------------------------------------------
def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of a requirements.txt (comments, blank lines and pip options skipped)."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def all_requirements() -> list[str]:
    return [TORCH_REQUIREMENT, *read_requirements()]


def requirement_satisfied(requirement: str) -> bool:
    """Whether an installed distribution satisfies ``requirement`` (name and version range)."""
    import importlib.metadata as metadata

    try:
        from packaging.requirements import Requirement
    except ImportError:  # packaging ships with Slicer; without it, check presence only
        name = requirement.split(";")[0].strip()
        for sep in "<>=!~[ ":
            name = name.split(sep)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            return False
        return True
    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate():
        return True
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return False
    return req.specifier.contains(version, prereleases=True)


def missing_requirements() -> list[str]:
    """Requirements (torch first) that Slicer's Python does not satisfy yet."""
    return [r for r in all_requirements() if not requirement_satisfied(r)]


def install_torch() -> None:
    """Install PyTorch with the PyTorch extension, which picks the build that fits the GPU driver."""
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise DependencyError("SynthBrain needs the PyTorch extension: install it from the Extensions Manager and restart Slicer") from None
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT[len("torch"):])
    if torch is None:
        raise DependencyError("PyTorch was not installed")


def install_requirements(path: Path = REQUIREMENTS_FILE) -> None:
    """Install Resources/requirements.txt: ``slicer.packaging.pip_ensure`` (Slicer >= 5.12) or ``pip_install``."""
    import slicer

    try:
        packaging = importlib.import_module("slicer.packaging")
    except ImportError:  # Slicer < 5.12
        packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        # The user already agreed in the module's own dialog; pip_ensure must not ask again, and
        # must install in --testing runs too (the module's self-test needs the packages).
        packaging.pip_ensure(packaging.load_requirements(str(path)), prompt_install=False, requester="SynthBrain", skip_in_testing=False)
    else:
        slicer.util.pip_install(["-r", str(path)])


def install_dependencies() -> None:
    """Install whatever is missing: torch through the PyTorch extension, the rest with pip.

    Callers ask the user first; this function shows no dialog of its own.
    """
    missing = missing_requirements()
    if any(r.startswith("torch") for r in missing):
        install_torch()
    if any(not r.startswith("torch") for r in missing):
        install_requirements()
    importlib.invalidate_caches()
    still = missing_requirements()
    if still:
        raise DependencyError(f"these Python packages are still missing after installation: {', '.join(still)}; restart Slicer and try again")
