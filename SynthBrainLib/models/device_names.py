"""Device, precision and decode option names, read without torch: the command line answers a
misspelt one at once; :mod:`SynthBrainLib.pipelines.device` then checks what the machine has."""

from __future__ import annotations

import re

from ..errors import ConditionError, DeviceError

#: Values of the ``precision`` option (pipelines, ``--precision``).
PRECISIONS = ("auto", "float32", "mixed", "bfloat16", "float16")

#: Values of the ``decode`` option (:mod:`SynthBrainLib.pipelines.decoding`).
DECODE_MODES = ("auto", "full", "slab", "tiled", "windows")

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def parse_device_name(spec: object) -> tuple[str, int | None]:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` as (kind, CUDA index or ``None``).

    Raises:
        DeviceError: not text, Apple ``mps`` (its 3D convolutions, group norms and interpolations are
            missing), or another name.
    """
    if spec is not None and not isinstance(spec, str):
        raise DeviceError(f"device {spec!r} is not one of auto, cpu, cuda, cuda:N (give it as text)")
    text = ("auto" if spec is None else spec).strip().lower()
    if text in ("auto", "cpu"):
        return text, None
    if text.startswith("mps"):
        raise DeviceError("device 'mps' is not supported: Apple MPS lacks the 3D operations these models need; use cpu")
    match = _CUDA.match(text)
    if match is None:
        raise DeviceError(f"device {spec!r} is not one of auto, cpu, cuda, cuda:N")
    return "cuda", int(match.group(1) or 0)


def check_precision_name(precision: object) -> str:
    """The ``precision`` option as one of :data:`PRECISIONS` (``None``: ``auto``)."""
    name = "auto" if precision is None else str(precision).strip().lower()
    if name not in PRECISIONS:
        raise DeviceError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return name


def check_decode_mode(mode: object) -> str:
    """The ``decode`` option as one of :data:`DECODE_MODES`."""
    text = str(mode).strip().lower() if isinstance(mode, str) else mode
    if text not in DECODE_MODES:
        raise ConditionError(f"decode {mode!r} is not one of {', '.join(DECODE_MODES)}")
    return text
