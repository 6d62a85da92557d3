"""File digests (sha256, md5): provenance of written files, checksums of weights."""

from __future__ import annotations

import hashlib
from pathlib import Path


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
