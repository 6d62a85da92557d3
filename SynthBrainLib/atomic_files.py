"""Temporary files for atomic writes: write beside the destination, then ``os.replace``.

``tempfile.mkstemp`` creates files readable by their owner only (mode 0600) — right for secrets,
wrong for images, sidecars and model weights that a user shares with colleagues or a Slicer
process run by another account. :func:`temporary_sibling` gives the temporary file the mode a
plain ``open(path, "w")`` would have (0666 minus the umask), so the renamed result looks like any
other file the user writes.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["temporary_sibling", "new_file_mode", "replaced_atomically"]


def new_file_mode() -> int:
    """Permission bits of a newly created regular file under the current umask."""
    # os.umask can only be read by setting it; set it back at once.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def temporary_sibling(dest: Path | str, suffix: str = ".tmp") -> Path:
    """Create an empty, closed temporary file in ``dest``'s folder and return its path.

    Its name starts with ``.{dest.name}.`` (hidden, and easy to trace to its destination) and ends
    with ``suffix`` (file writers such as nibabel and SimpleITK choose the format from it). The
    caller writes it, then ``os.replace(tmp, dest)``, and deletes it on failure.
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix)
    try:
        os.fchmod(fd, new_file_mode())
    finally:
        os.close(fd)
    return Path(tmp)


@contextmanager
def replaced_atomically(dest: Path | str, suffix: str = ".tmp") -> Iterator[Path]:
    """Write one file atomically: yields a :func:`temporary_sibling` of ``dest`` to fill; when
    the block ends normally it replaces ``dest``, on any error (or Ctrl-C) it is deleted."""
    dest = Path(dest)
    tmp = temporary_sibling(dest, suffix=suffix)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
