"""Choosing the torch device and the precision a pipeline runs in."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..errors import DeviceError
from ..models.device_names import PRECISIONS, check_precision_name, parse_device_name  # noqa: F401
from ..models.presets import check_preset


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` into a usable :class:`torch.device`.

    ``auto`` picks CUDA when present, else the CPU. Apple ``mps`` is refused: the 3D convolutions,
    group norms and interpolations these models need are not implemented for 3D tensors there.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    kind, index = parse_device_name(spec)
    if kind == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} was requested but CUDA is not available on this machine; use cpu or auto")
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(
            f"device {spec!r} does not exist: this machine has {count} CUDA device(s) (cuda:0–cuda:{count - 1})"
        )
    return torch.device(f"cuda:{index}")


_DTYPES = {"float32": torch.float32, "mixed": torch.bfloat16, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: ``mixed`` precision runs a denoising step in float32 while the noise-to-signal ratio
#: sigma_t / alpha_t of its input is above this, in bfloat16 below it (and decodes in bfloat16).
#: The network's noise prediction is scaled by sigma/alpha in the data prediction, so bfloat16
#: rounding there is amplified up to ~100x in the first steps and damped in the last ones; measured
#: on the demo model in docs/benchmarks.md.
MIXED_NOISE_RATIO = 2.0


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), so bf16 autocast is fast."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


@dataclass(frozen=True)
class Precision:
    """How a pipeline runs its networks: the autocast dtype and the memory layout of 3D tensors.

    * ``float32``: no autocast (the reference; default on the CPU).
    * ``float16``: fp16 autocast, CUDA only (default on CUDA).
    * ``bfloat16``: bf16 autocast on the CPU or CUDA for every network call (opt-in; fast on CPUs
      with AVX-512 BF16/AMX; measurably less accurate on the first, noisiest denoising steps).
    * ``mixed``: bf16 autocast, except denoising steps whose input is noisier than
      :data:`MIXED_NOISE_RATIO` (sigma/alpha), which run in float32: the speed of bf16 on most
      steps and on the decoder at float32's accuracy (see :meth:`for_noise_ratio`).

    On the CPU, networks and their 5D inputs use ``torch.channels_last_3d`` (NDHWC), which oneDNN's
    3D convolutions run 1.5-2.5x faster than NCDHW at the same precision.

    Attributes:
        device: where the networks run.
        dtype: autocast dtype; ``torch.float32`` means no autocast.
        channels_last: use ``torch.channels_last_3d`` for networks and 5D inputs.
        float32_above_noise_ratio: ``mixed``: denoising steps with sigma/alpha above this run in
            float32; ``None``: every call uses ``dtype``.
    """

    device: torch.device
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    float32_above_noise_ratio: float | None = None

    @classmethod
    def for_device(cls, device: torch.device, precision: str | None = None, preset: str = "published") -> "Precision":
        """Resolve a ``precision`` name for ``device``.

        ``auto`` is float16 on CUDA; on the CPU the ``preset``'s precision where the CPU computes it
        natively (``fast``: bfloat16 with AVX-512 BF16/AMX), else float32.

        Raises:
            DeviceError: unknown name, or float16 on the CPU.
        """
        name = check_precision_name(precision)
        cuda = device.type == "cuda"
        if name == "auto":
            name = "float16" if cuda else "float32"
            if name == "float32" and check_preset(preset).cpu_precision == "bfloat16" and cpu_has_bf16():
                name = "bfloat16"
        if name == "float16" and not cuda:
            raise DeviceError(
                "half precision is only available on CUDA devices; the CPU runs in float32, mixed or bfloat16"
            )
        return cls(
            device,
            _DTYPES[name],
            channels_last=not cuda,
            float32_above_noise_ratio=MIXED_NOISE_RATIO if name == "mixed" else None,
        )

    def for_noise_ratio(self, noise_ratio: float) -> "Precision":
        """The precision of a denoising step whose input has noise-to-signal ratio ``sigma/alpha``:
        float32 for noisy steps under ``mixed``, else this precision."""
        from dataclasses import replace

        if self.float32_above_noise_ratio is not None and noise_ratio > self.float32_above_noise_ratio:
            return replace(self, dtype=torch.float32, float32_above_noise_ratio=None)
        return self

    @property
    def autocasting(self) -> bool:
        return self.dtype != torch.float32

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for network calls: autocast to :attr:`dtype`, or nothing for float32."""
        if not self.autocasting:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """Put a network's 5D weights in this precision's memory layout (in place; returns it)."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last_3d)
        return module

    def store_weights(self, module: torch.nn.Module) -> int:
        """Keep a network's convolution and linear weights in this precision's 16-bit dtype when
        every call runs under that autocast (``bfloat16``/``float16``, not ``mixed``): autocast
        rounds them to it on every call anyway, so the results are the same, while the weights take
        half the memory and no per-run cast copies are made (Brain LDM's UNet: 2.2 -> 1.1 GB, and the
        1.1 GB cast cache is gone). Norm layers keep float32 weights (autocast runs them in float32).
        Returns the number of modules converted."""
        if not self.autocasting or self.float32_above_noise_ratio is not None:
            return 0
        kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
        converted = [m.to(self.dtype) for m in module.modules() if isinstance(m, kinds)]
        return len(converted)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """A 5D network input in this precision's memory layout (other tensors unchanged)."""
        if self.channels_last and x.ndim == 5:
            return x.contiguous(memory_format=torch.channels_last_3d)
        return x

    @property
    def name(self) -> str:
        """Recorded in provenance, e.g. ``float32``, ``float16-autocast``, ``bfloat16-autocast+channels_last_3d``,
        ``mixed(float32 above sigma/alpha 2, else bfloat16-autocast)+channels_last_3d``."""
        base = {torch.float32: "float32", torch.float16: "float16-autocast", torch.bfloat16: "bfloat16-autocast"}[
            self.dtype
        ]
        if self.float32_above_noise_ratio is not None:
            base = f"mixed(float32 above sigma/alpha {self.float32_above_noise_ratio:g}, else {base})"
        return base + ("+channels_last_3d" if self.channels_last else "")

    @property
    def short(self) -> str:
        """``float32`` | ``float16`` | ``bfloat16`` | ``mixed``: the option value that gives this precision."""
        if self.float32_above_noise_ratio is not None:
            return "mixed"
        return {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[self.dtype]


def describe_device(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H100, 79.6 GB)`` for logs and provenance."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 1e9:.1f} GB)"
    return str(device)
