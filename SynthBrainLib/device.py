"""Choosing the torch device and the precision a pipeline runs in."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch

from .errors import DeviceError

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` into a usable :class:`torch.device`.

    ``auto`` picks CUDA when present, else the CPU. Apple ``mps`` is refused: the 3D convolutions,
    group norms and interpolations these models need are not implemented for 3D tensors there.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.startswith("mps"):
        raise DeviceError("device 'mps' is not supported: Apple MPS lacks the 3D operations these models need; use cpu")
    match = _CUDA.match(text)
    if match is None:
        raise DeviceError(f"device {spec!r} is not one of auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} was requested but CUDA is not available on this machine; use cpu or auto")
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {spec!r} does not exist: this machine has {count} CUDA device(s) (cuda:0–cuda:{count - 1})")
    return torch.device(f"cuda:{index}")


@dataclass(frozen=True)
class Precision:
    """How a pipeline runs its networks: fp32 everywhere, or fp16 autocast on CUDA."""

    device: torch.device
    half: bool

    @classmethod
    def for_device(cls, device: torch.device, half: bool | None = None) -> "Precision":
        """Half precision is used on CUDA only (default on), never on the CPU."""
        if device.type != "cuda":
            if half:
                raise DeviceError("half precision is only available on CUDA devices; the CPU runs in float32")
            return cls(device, False)
        return cls(device, True if half is None else bool(half))

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.half:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    @property
    def name(self) -> str:
        return "float16-autocast" if self.half else "float32"


def describe_device(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H100, 79.6 GB)`` for logs and provenance."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 1e9:.1f} GB)"
    return str(device)
