"""File digests (sha256, md5): provenance of written files, checksums of weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import CheckpointError


def file_digests(path: str | Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file, reading it once in 8 MiB chunks."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(8 << 20), b""):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def file_sha256(path: str | Path) -> str:
    return file_digests(path)["sha256"]


def verify_file(path: str | Path, sha256: str | None = None, md5: str | None = None, label: str | None = None) -> str:
    """Check a file against the known checksums; return its sha256.

    Raises:
        CheckpointError: a known checksum differs (the message gives both values).
    """
    algorithms = ("sha256", "md5") if md5 else ("sha256",)
    digests = file_digests(path, algorithms)
    name = label or Path(path).name
    if sha256 and digests["sha256"] != sha256:
        raise CheckpointError(
            f"{name}: sha256 {digests['sha256']} does not match the expected {sha256}; the file is corrupt "
            "or not the published weights"
        )
    if md5 and digests["md5"] != md5:
        raise CheckpointError(
            f"{name}: md5 {digests['md5']} does not match the expected {md5}; the file is corrupt or not the "
            "published weights"
        )
    return digests["sha256"]
