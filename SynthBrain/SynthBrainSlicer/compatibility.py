"""Which Slicer releases SynthBrain runs on, decided before anything else of the module loads.

**Slicer 5.10 or newer (Python 3.10 or newer).** Why not 5.8 (released 2025-01, 5.8.1 2025-03-02):
it ships Python 3.9 (Slicer's CMakeLists.txt at v5.8.1), and the newest PyTorch built for Python
3.9 is 2.8. Below 2.10, ``torch.load(weights_only=True)`` can be bypassed (CVE-2025-32434,
CVE-2026-24747), and SynthBrain never loads a checkpoint another way. Supporting 5.8 would mean a
second loading policy (safetensors only) and its own workarounds (``connectGui`` returns None there)
for a release two versions old: 5.10.0 came out on 2025-11-10 and 5.12 is the current release.

On an older Slicer the module still loads, shows one line that says this, and installs nothing.
This file and :mod:`.i18n` are the only parts loaded there, so they keep to Python 3.9's syntax.
"""

from __future__ import annotations

import sys

from .i18n import _

#: The oldest Slicer release and Python SynthBrain runs on.
MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 10)


def unsupported_reason(python_version=None, slicer_version=None):
    """None where SynthBrain runs, else the one line that tells the user why not.

    Args:
        python_version: ``sys.version_info`` (default) or a (major, minor, ...) tuple.
        slicer_version: (major, minor) of the running Slicer, when known.
    """
    python = tuple(python_version if python_version is not None else sys.version_info)[:2]
    slicer = tuple(slicer_version)[:2] if slicer_version else None
    if python >= MINIMUM_PYTHON and (slicer is None or slicer >= MINIMUM_SLICER):
        return None
    release = "{0}.{1}".format(*slicer) if slicer else _("this release")
    return _(
        "SynthBrain needs Slicer 5.10 or newer (Python 3.10 or newer); Slicer {release} has Python {python}, for "
        "which no PyTorch with safe weight loading (2.10 or newer) exists. Install Slicer 5.10 or newer from "
        "download.slicer.org; nothing was installed."
    ).format(release=release, python="{0}.{1}".format(*python))


def running_slicer_version(slicer_module):
    """(major, minor) of the running Slicer application, or None outside it."""
    app = getattr(slicer_module, "app", None)
    major, minor = getattr(app, "majorVersion", None), getattr(app, "minorVersion", None)
    return (int(major), int(minor)) if isinstance(major, int) and isinstance(minor, int) else None
