"""Where SynthBrainLib and the demo models are, for both ways the module is installed.

Two layouts are supported, with the same code:

* **Installed extension** (Extensions Manager, or a build tree): CMake copies ``SynthBrainLib/`` and
  ``Resources/Models/`` beside the module scripts, into ``lib/Slicer-X.Y/qt-scripted-modules/``,
  which Slicer already has on ``sys.path``.
* **Source checkout** (the repository's ``SynthBrain/`` folder added as an additional module
  path): ``SynthBrainLib/`` and ``Resources/Models/`` are in the repository root, one level up; the
  root is put on ``sys.path``.

Nothing here imports SynthBrainLib, torch or Qt, so the module loads before its dependencies are
installed (those are installed by :mod:`.dependencies`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

#: Folder of SynthBrain.py (and of Resources/).
MODULE_DIR = Path(__file__).resolve().parent.parent


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
