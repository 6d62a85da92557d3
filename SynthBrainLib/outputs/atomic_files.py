"""Temporary files for atomic writes: write beside the destination, then ``os.replace``.

``tempfile.mkstemp`` creates files readable by their owner only (mode 0600) — right for secrets,
wrong for images, sidecars and model weights that a user shares with colleagues or a Slicer
process run by another account. :func:`temporary_sibling` gives the temporary file the mode a
plain ``open(path, "w")`` would have (0666 minus the umask), so the renamed result looks like any
other file the user writes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["temporary_sibling", "new_file_mode", "replaced_atomically", "place", "AlreadyExists", "TEMPORARY_MARK"]

#: Every temporary file's name contains this (``.<dest>.synthbrain-tmp.<random><suffix>``), so that
#: leftovers of a killed process can be recognised and removed (:func:`remove_stale_temporaries`).
TEMPORARY_MARK = ".synthbrain-tmp."


class AlreadyExists(FileExistsError):
    """The destination appeared while the file was being written (another process made it)."""


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
    prefix = f".{dest.name[:80]}{TEMPORARY_MARK}"  # a long destination name must not make the temporary one too long
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=prefix, suffix=suffix)
    try:
        os.fchmod(fd, new_file_mode())
    finally:
        os.close(fd)
    return Path(tmp)


def place(tmp: Path | str, dest: Path | str, *, overwrite: bool) -> None:
    """Move a finished temporary file to ``dest`` in one step.

    With ``overwrite`` it replaces whatever is there (``os.replace``). Without it the move is
    create-exclusive: ``os.link`` fails if anything at all has that name - a file another process
    finished a moment ago, a symlink, even a dangling one - so an existing file can never be
    replaced by a race between checking and writing. Raises :class:`AlreadyExists` then; ``tmp``
    is left for the caller to delete.
    """
    tmp, dest = Path(tmp), Path(dest)
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise AlreadyExists(f"{dest} already exists") from None
    except OSError:  # no hard links here (FAT, some shares and FUSE file systems): exclusive create, then copy
        _exclusive_copy(tmp, dest)
    try:
        tmp.unlink()
    except OSError:  # dest is in place; the temporary name is removed by the next write here when stale
        pass


def _exclusive_copy(tmp: Path, dest: Path) -> None:
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, new_file_mode())
    except FileExistsError:
        raise AlreadyExists(f"{dest} already exists") from None
    try:
        with os.fdopen(fd, "wb") as out, open(tmp, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


@contextmanager
def replaced_atomically(dest: Path | str, suffix: str = ".tmp", *, overwrite: bool = True) -> Iterator[Path]:
    """Write one file atomically: yields a :func:`temporary_sibling` of ``dest`` to fill; when
    the block ends normally it is :func:`place`-d at ``dest`` (create-exclusive unless
    ``overwrite``), on any error (or Ctrl-C) it is deleted."""
    dest = Path(dest)
    tmp = temporary_sibling(dest, suffix=suffix)
    try:
        yield tmp
        place(tmp, dest, overwrite=overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: Path | str, older_than_s: float = 3600.0) -> list[Path]:
    """Delete temporary files of SynthBrain writes in ``folder`` left by a killed process
    (older than ``older_than_s``, so that a write in progress elsewhere is never touched)."""
    import time

    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    limit = time.time() - older_than_s
    for path in folder.glob(f".*{TEMPORARY_MARK}*"):
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime < limit:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed
