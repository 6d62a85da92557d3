"""HTTP(S) download with resume (Range requests) and checksum verification."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from ..errors import CheckpointError
from ..outputs.digests import verify_file

ByteProgress = Callable[[int, int | None], None]
_CHUNK = 1 << 20


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    progress: ByteProgress | None = None,
    timeout: float = 60.0,
) -> str:
    """Fetch ``url`` into ``dest``; resume a partial ``dest.part`` left by an earlier attempt.

    The file only appears at ``dest`` once it is complete and its checksum (when known) matches;
    a mismatching download is deleted. Returns the sha256 of the file.

    Raises:
        CheckpointError: network failure (the partial file is kept for the next attempt) or a
            checksum mismatch.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "synthbrain"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", 200)
            if have and status != 206:
                have = 0  # the server ignored Range: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with open(part, "ab" if have else "wb") as fh:
                done = have
                if progress:
                    progress(done, total)
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    fh.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            if total is not None and done < total:
                raise CheckpointError(
                    f"download of {url} stopped at {done} of {total} bytes; run the command again to resume"
                )
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the partial file is complete
            pass
        else:
            raise CheckpointError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CheckpointError(
            f"cannot download {url}: {reason}; partial data kept, run the command again to resume"
        ) from None
    try:
        digest = verify_file(part, sha256=sha256, md5=md5, label=dest.name)
    except CheckpointError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return digest
