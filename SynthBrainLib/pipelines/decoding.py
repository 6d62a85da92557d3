"""Decoding latents to volumes: in one piece, in slabs, or in overlapping windows.

Three ways, all giving the full decode's output up to float rounding:

* ``full``: the autoencoder's own ``decode_stage_2_outputs`` on the whole latent.
* ``slab``: :mod:`.slab_decoding` - the decoder's high-resolution levels slab by slab with exact
  halos and whole-volume GroupNorm statistics. Brain LDM in bfloat16: about the full decode's time
  in less than half its memory; the default where a full decode needs more than
  :data:`SLAB_ABOVE_BYTES` on the CPU (docs/benchmarks.md).
* ``tiled``: the older windowed decode below, kept for comparison (same memory as ``slab``, 5x
  its time).
* ``windows``: for decoders that cannot run in slabs (MONAI's ``AutoencoderKlMaisi``):
  :func:`decode_windows`, MAISI's own way - overlapping latent windows, each decoded whole and
  blended with Gaussian weights. Each window normalises with its own statistics, so it is close to
  the full decode, not equal (measured in docs/benchmarks.md); upstream NV-Generate decodes this way
  whenever the latent exceeds 80^3.

A full decode of Brain LDM's 160x224x160 output holds several 128-channel float32 tensors of the
full grid at once (12.7 GB peak on the CPU). Most of that memory - and about 80% of the work - is in
the decoder's last resolution level. The tiled decode therefore runs the decoder in two parts:

* the **head** (``post_quant_conv`` and every decoder block before the last ``Upsample``) on the whole
  latent, exactly as the full decode does (for Brain LDM its output is 128 x 80 x 112 x 80, 0.37 GB);
* the **tail** (last upsampling, last-level residual blocks, output norm and convolution) window by
  window with :func:`monai.inferers.sliding_window_inference`: overlapping slabs of the head's
  output, each decoded to a 2x zoomed output window. The blending weights (``roi_weight_map``) are
  ~0 on the few voxels next to a window edge - where zero padding spoils the tail's convolutions -
  and rise with a cosine ramp across the rest of the shared band, so spoiled values never count.

With frozen GroupNorm statistics the tail is a local operator, so the tiled decode equals the full
decode to float rounding. ``norm="global"`` (default) therefore first measures every tail
GroupNorm's statistics over the whole volume - pass ``k`` runs the tail up to GroupNorm ``k`` over
non-overlapping windows with a halo, earlier GroupNorms frozen - and then freezes them all for the
blended pass. On CPUs with native bfloat16 (and on CUDA) these statistics passes run in bfloat16
autocast (``fast_stats``): 2-3x cheaper, and the decode still matches the full one to ~70 dB.
``norm="window"`` (each window normalises with its own statistics) is faster but visibly wrong on
trained decoders (~22-33 dB on the demo model); it is kept only for comparison.
Measurements: docs/benchmarks.md.

Only ``monai.networks.nets.AutoencoderKL`` decoders can be tiled; SPADE autoencoders (whose decoder
blocks also take the label map) always decode in one piece.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from ..errors import ConditionError
from ..models.device_names import DECODE_MODES, check_decode_mode  # noqa: F401  (part of this API)
from .device import Precision, cpu_has_bf16
from .slab_decoding import ChannelSums, SlabSettings, decode_slabs, frozen_norm, slab_blocks

#: ``decode="auto"`` decodes in slabs when a full decode is estimated to need more than this fraction
#: of the device's total memory (RAM on the CPU, GPU memory on CUDA) ...
AUTO_TILE_MEMORY_FRACTION = 0.5

#: ... and on the CPU already above this many bytes: there slabs cost about the full decode's time
#: (Brain LDM: 30.0 vs 28.8 s in bfloat16, 61.5 vs 66.3 s in float32) for 2-3 GB instead of 5-9 GB.
SLAB_ABOVE_BYTES = 2**30

#: Estimated peak bytes of a full decode per output voxel and channel of the decoder's last level
#: (measured for Brain LDM: 12.7 GB for 160x224x160 voxels x 128 channels in float32 = 17.3 B).
FULL_DECODE_BYTES_PER_VOXEL_CHANNEL = {"float32": 17.3, "half": 9.6}

NORM_MODES = ("window", "global")
BLENDS = ("ramp", "gaussian", "constant")

#: Head-grid voxels at a window border that the zero padding of the tail's convolutions reaches,
#: when not computed from the tail (Brain LDM's decoder: 6 output voxels = 3 head voxels).
BORDER = 3


@dataclass(frozen=True)
class TileSettings:
    """How a tiled decode cuts the work.

    Attributes:
        max_window_voxels: output voxels per window; ``None`` chooses by precision (0.5 M in
            float32, 1 M in bfloat16/float16), which keeps Brain LDM's 160x224x160 decode under 4 GB
            on the CPU (docs/benchmarks.md).
        overlap: fraction of a window shared with its neighbour along each cut axis (0-0.9); at
            least ``2 * border + 2`` head voxels are always shared so blending can skip borders.
        blend: ``ramp`` (cosine ramp that gives the border band ~0 weight), ``gaussian``
            (MONAI's Gaussian importance map, no border band) or ``constant``.
        norm: ``global`` (GroupNorm statistics of the whole volume, measured first) or ``window``
            (each window's own statistics: faster, wrong on trained decoders; for comparison).
        fast_stats: measure the ``global`` statistics in bfloat16 autocast where the device
            computes bfloat16 natively; ``False`` measures them in the decode's precision (slower;
            matches the full decode to float rounding).
    """

    max_window_voxels: int | None = None
    overlap: float = 0.25
    blend: str = "ramp"
    norm: str = "global"
    fast_stats: bool = True

    def check(self) -> None:
        v = self.max_window_voxels
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 4096):
            raise ConditionError(f"max_window_voxels {v!r} is outside 4096–unlimited")
        if not isinstance(self.overlap, (int, float)) or not 0.0 <= self.overlap <= 0.9:
            raise ConditionError(f"tile overlap {self.overlap!r} is outside 0–0.9")
        if self.blend not in BLENDS:
            raise ConditionError(f"tile blend {self.blend!r} is not one of {', '.join(BLENDS)}")
        if self.norm not in NORM_MODES:
            raise ConditionError(f"tile norm {self.norm!r} is not one of {', '.join(NORM_MODES)}")

    def window_voxels(self, precision: Precision) -> int:
        if self.max_window_voxels is not None:
            return self.max_window_voxels
        # Measured on Brain LDM's decoder (160x224x160, CPU): bfloat16 windows of 2 M voxels peaked at
        # 5.7 GB, of 1 M at 3.3 GB (the 4 GB target); float32 needs about twice the bytes per voxel.
        return 500_000 if not precision.autocasting else 1_000_000

    def stats_precision(self, precision: Precision) -> Precision:
        """Precision of the statistics passes."""
        from dataclasses import replace

        native = precision.device.type == "cuda" or cpu_has_bf16()
        if self.fast_stats and native and precision.dtype == torch.float32:
            return replace(precision, dtype=torch.bfloat16)
        return precision

    def record(self, precision: Precision) -> dict[str, Any]:
        rec = {
            "max_window_voxels": self.window_voxels(precision),
            "overlap": self.overlap,
            "blend": self.blend,
            "norm": self.norm,
        }
        if self.norm == "global":
            rec["stats_precision"] = self.stats_precision(precision).short
        return rec


def full_decode_bytes(autoencoder: torch.nn.Module, output_shape: Sequence[int], precision: Precision) -> int:
    """Estimated peak memory (bytes) of a full decode to ``output_shape``: output voxels x channels
    of the decoder's last level x :data:`FULL_DECODE_BYTES_PER_VOXEL_CHANNEL`."""
    channels = getattr(autoencoder, "decoder", None)
    channels = max(getattr(channels, "channels", (128,)) or (128,))
    per = FULL_DECODE_BYTES_PER_VOXEL_CHANNEL["float32" if not precision.autocasting else "half"]
    return int(math.prod(int(s) for s in output_shape) * channels * per)


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of the device: GPU memory on CUDA, physical RAM on the CPU (Linux /proc,
    else ``os.sysconf``)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 16 * 2**30


# ----------------------------------------------------------------------------------------------
# Splitting the decoder
# ----------------------------------------------------------------------------------------------
def split_decoder(autoencoder: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, int] | None:
    """(head, tail, zoom) of an ``AutoencoderKL``, or ``None`` when it cannot be tiled.

    ``head(z)`` = ``post_quant_conv`` + decoder blocks before the last ``Upsample``; ``tail`` = the
    rest; ``zoom`` = output voxels per head voxel along each axis (2).
    """
    from monai.networks.blocks import Upsample
    from monai.networks.nets import AutoencoderKL

    if type(autoencoder) is not AutoencoderKL or getattr(autoencoder, "use_checkpoint", False):
        return None
    blocks = list(autoencoder.decoder.blocks)
    ups = [i for i, b in enumerate(blocks) if isinstance(b, Upsample) or type(b).__name__ == "Upsample"]
    if not ups:
        return None
    cut = ups[-1]
    head = torch.nn.Sequential(autoencoder.post_quant_conv, *blocks[:cut])
    tail = torch.nn.Sequential(*blocks[cut:])
    return head, tail, 2


def tail_border(tail: torch.nn.Module, zoom: int) -> int:
    """Head voxels next to a window edge whose tail output the zero padding reaches: the summed
    radius of the tail's convolutions (output voxels), divided by the zoom, rounded up."""
    radius = 0
    for m in tail.modules():
        if isinstance(m, torch.nn.Conv3d):
            radius += max((k - 1) // 2 * d for k, d in zip(m.kernel_size, m.dilation))
    return max(math.ceil(radius / zoom), 1)


def window_shape(grid: Sequence[int], zoom: int, max_window_voxels: int, border: int = BORDER) -> tuple[int, ...]:
    """Window (head-grid voxels) whose zoomed output fits ``max_window_voxels``: the whole grid if
    it fits, else slabs across the longest axis (thickest slabs, least overlap work), cutting a
    second axis only when a slab of the shortest window (``4 * border + 4``, twice the smallest
    shared band) is still too big."""
    min_window = 4 * border + 4
    roi = list(grid)
    per_voxel = zoom ** len(grid)
    for axis in sorted(range(len(roi)), key=lambda a: -roi[a]):
        voxels = per_voxel * math.prod(roi)
        if voxels <= max_window_voxels:
            break
        if roi[axis] <= min_window:
            continue
        other = voxels // roi[axis]
        roi[axis] = max(min(max_window_voxels // other, roi[axis]), min_window)
    return tuple(roi)


# ----------------------------------------------------------------------------------------------
# GroupNorm with frozen (whole-volume) statistics
# ----------------------------------------------------------------------------------------------
class _StopPass(Exception):
    """Ends a statistics pass once the GroupNorm being measured has seen its input."""


@contextlib.contextmanager
def _norm_hooks(
    norms: list[torch.nn.GroupNorm],
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]],
    measure: tuple[int, ChannelSums, tuple[slice, ...]] | None = None,
) -> Iterator[None]:
    """GroupNorms ``norms[i]`` with ``i`` in ``stats`` use those statistics (the ``(scale, shift)``
    of :meth:`ChannelSums.norm_affine`); with ``measure = (k, sums, core)``, norm ``k``'s input is
    added to ``sums`` over ``core`` and the pass stops there."""
    handles = []
    try:
        for i, gn in enumerate(norms):
            if i in stats:
                handles.append(
                    gn.register_forward_hook(lambda m, args, out, affine=stats[i]: frozen_norm(args[0], affine))
                )
        if measure is not None:
            k, sums, core = measure

            def pre_hook(m, args):
                sums.add(args[0][(slice(None), slice(None), *core)])
                raise _StopPass

            handles.append(norms[k].register_forward_pre_hook(pre_hook))
        yield
    finally:
        for h in handles:
            h.remove()


def _partition(
    features: torch.Tensor, roi: Sequence[int], zoom: int, halo: int
) -> Iterator[tuple[torch.Tensor, tuple[slice, ...]]]:
    """Non-overlapping ``roi`` cores of the head grid, each with ``halo`` voxels of context (at
    least the tail's border), as (window, core slices of the window's output)."""
    grid = features.shape[2:]
    for origin in itertools.product(*[range(0, g, r) for g, r in zip(grid, roi)]):
        lo = [max(o - halo, 0) for o in origin]
        hi = [min(o + r + halo, g) for o, r, g in zip(origin, roi, grid)]
        window = features[(slice(None), slice(None), *[slice(a, b) for a, b in zip(lo, hi)])]
        core = tuple(slice((o - a) * zoom, (min(o + r, g) - a) * zoom) for o, a, r, g in zip(origin, lo, roi, grid))
        yield window, core


def _global_norm_stats(
    tail: torch.nn.Module,
    norms: list[torch.nn.GroupNorm],
    features: torch.Tensor,
    roi: Sequence[int],
    zoom: int,
    border: int,
    precision: Precision,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Whole-volume statistics of every tail GroupNorm, in order: pass ``k`` runs the tail up to
    norm ``k`` window by window (exact cores, norms before ``k`` frozen to their measured values)."""
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for k in range(len(norms)):
        sums = ChannelSums()
        for window, core in _partition(features, roi, zoom, border + 1):
            with _norm_hooks(norms, stats, (k, sums, core)), precision.autocast():
                try:
                    tail(precision.layout(window))
                except _StopPass:
                    pass
        stats[k] = sums.norm_affine(norms[k])
    return stats


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------
def decode_full(
    autoencoder: torch.nn.Module, latent: torch.Tensor, precision: Precision, decoder_inputs: tuple = ()
) -> torch.Tensor:
    """``autoencoder.decode_stage_2_outputs(latent, *decoder_inputs)`` in ``precision``; float32 output."""
    with torch.inference_mode(), precision.autocast():
        out = autoencoder.decode_stage_2_outputs(precision.layout(latent), *decoder_inputs)
    return out.float().contiguous()


def decode_tiled(
    autoencoder: torch.nn.Module, latent: torch.Tensor, precision: Precision, settings: TileSettings | None = None
) -> torch.Tensor:
    """Decode ``latent`` (B, C, x, y, z) with the head on the whole latent and the tail by windows.

    Returns:
        float32 (B, C_out, X, Y, Z), the same shape as :func:`decode_full`.

    Raises:
        ConditionError: the autoencoder cannot be tiled (not an ``AutoencoderKL``).
    """
    from monai.inferers import sliding_window_inference

    settings = settings or TileSettings()
    settings.check()
    parts = split_decoder(autoencoder)
    if parts is None:
        raise ConditionError(
            "decode 'tiled' needs a monai AutoencoderKL decoder; this model has "
            f"{type(autoencoder).__name__}: use decode 'full'"
        )
    head, tail, zoom = parts
    with torch.inference_mode():
        with precision.autocast():
            features = head(precision.layout(latent))
        features = features.float().contiguous()
        grid = tuple(features.shape[2:])
        border = tail_border(tail, zoom)
        roi = window_shape(grid, zoom, settings.window_voxels(precision), border)
        overlaps = window_overlaps(grid, roi, settings.overlap, border)
        norms = [m for m in tail.modules() if isinstance(m, torch.nn.GroupNorm)]
        stats = {}
        if settings.norm == "global" and norms:
            stats_precision = settings.stats_precision(precision)
            stats_roi = window_shape(grid, zoom, settings.window_voxels(stats_precision), border)
            stats = _global_norm_stats(tail, norms, features, stats_roi, zoom, border, stats_precision)

        def predictor(window: torch.Tensor) -> torch.Tensor:
            with precision.autocast():
                out = tail(precision.layout(window))
            return out.float().contiguous()

        if settings.blend == "gaussian":
            blend = {"mode": "gaussian"}
        else:
            blend = {"roi_weight_map": blend_weights(grid, roi, overlaps, settings.blend, border)}
        with _norm_hooks(norms, stats):
            return sliding_window_inference(
                features, roi_size=roi, sw_batch_size=1, predictor=predictor, overlap=overlaps, **blend
            ).float()


def window_overlaps(grid: Sequence[int], roi: Sequence[int], overlap: float, border: int = BORDER) -> tuple[float, ...]:
    """Per-axis overlap fractions for ``sliding_window_inference``: ``overlap`` of the window, and at
    least ``2 * border + 2`` voxels, along the axes that are cut; 0 along the others."""
    out = []
    for g, r in zip(grid, roi):
        if r >= g:
            out.append(0.0)
            continue
        shared = min(max(math.ceil(r * overlap), 2 * border + 2), r - 1)
        interval = r - shared
        out.append(1.0 - (interval + 0.5) / r)  # int(r * (1 - o)) == interval
    return tuple(out)


def blend_weights(
    grid: Sequence[int], roi: Sequence[int], overlaps: Sequence[float], blend: str = "ramp", border: int = BORDER
) -> torch.Tensor:
    """Window weights (1, 1, *roi) for blending.

    1 along the axes a window spans whole. Along cut axes (``ramp``): ~0 (1e-6) on the ``border``
    voxels next to each window edge, whose values the zero padding of the convolutions spoils,
    then a cosine ramp up to 1 over the rest of the shared band; the neighbour's weight is 1 there,
    so spoiled values never count. A window edge on the volume boundary has no neighbour: its tiny
    weights normalise to 1. ``constant``: 1 everywhere.
    """
    profiles = []
    for g, r, o in zip(grid, roi, overlaps):
        p = torch.ones(r, dtype=torch.float64)
        if r < g and blend == "ramp":
            shared = r - int(r * (1 - o))
            d = torch.minimum(torch.arange(r, dtype=torch.float64), r - 1 - torch.arange(r, dtype=torch.float64))
            ramp = ((d - border + 1) / max(shared - 2 * border, 1)).clamp(0.0, 1.0)
            p = (0.5 - 0.5 * torch.cos(math.pi * ramp)).clamp_min(1e-6)
        profiles.append(p)
    w = profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]
    return w.float()[None, None]


#: ``decode="windows"``: the overlap of neighbouring latent windows and their blending, as upstream
#: MAISI's ``SlidingWindowInferer`` (``scripts/diff_model_infer.py``: overlap 0.4, gaussian).
WINDOW_OVERLAP = 0.4
#: Output voxels per window: the latent window's longest axis is halved until its decode fits (a
#: full bfloat16 decode of NV-Generate's autoencoder peaked at 11.5 GB for 256x256x128 = 8.4 M
#: voxels on the CPU, 1.4 kB per voxel; 4.2 M voxels keep the whole run under 8 GB).
WINDOW_OUTPUT_VOXELS = {"float32": 2_100_000, "half": 4_200_000}
#: ``auto`` decodes a decoder that cannot run in slabs in windows above this estimated full-decode
#: size on the CPU (on CUDA: above :data:`AUTO_TILE_MEMORY_FRACTION` of the GPU's memory).
WINDOWS_ABOVE_BYTES = 6 * 2**30


def window_roi(
    latent_shape: Sequence[int], zoom: int, max_output_voxels: int, minimum: Sequence[int] = (8, 8, 8)
) -> tuple[int, ...]:
    """Latent window (x, y, z): the whole latent, its longest halvable axis halved until the decoded
    window holds at most ``max_output_voxels``, never below ``minimum`` latent voxels on an axis."""
    roi = [int(s) for s in latent_shape]
    while math.prod(roi) * zoom**3 > max_output_voxels:
        halvable = [i for i in range(len(roi)) if (roi[i] + 1) // 2 >= minimum[i]]
        if not halvable:
            break
        i = max(halvable, key=lambda k: roi[k])
        roi[i] = (roi[i] + 1) // 2
    return tuple(roi)


def split_minimum(autoencoder: torch.nn.Module) -> tuple[int, int, int]:
    """Smallest latent window per axis the decoder takes: 8, and along the axis MAISI splits its
    convolutions (``num_splits`` pieces along ``dim_split``) 3 voxels per piece - thinner pieces
    than the 3x3x3 kernel fail (measured: NV-Generate's 4 splits need 12 latent voxels)."""
    minimum = [8, 8, 8]
    for m in autoencoder.decoder.modules():
        splits, axis = getattr(m, "num_splits", None), getattr(m, "dim_split", None)
        if isinstance(splits, int) and isinstance(axis, int) and splits > 1 and 0 <= axis < 3:
            minimum[axis] = max(minimum[axis], 3 * splits)
    return tuple(minimum)


def decode_windows(
    autoencoder: torch.nn.Module,
    latent: torch.Tensor,
    precision: Precision,
    output_shape: Sequence[int],
    max_output_voxels: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Decode ``latent`` (B, C, x, y, z) to ``output_shape`` (X, Y, Z) in overlapping latent windows
    with MONAI's ``SlidingWindowInferer`` (overlap :data:`WINDOW_OVERLAP`, Gaussian blending), each
    window with ``decode_stage_2_outputs``. Returns float32 (B, C_out, X, Y, Z) and the record of how."""
    from monai.inferers import SlidingWindowInferer

    zooms = {int(o) // int(n) for o, n in zip(output_shape, latent.shape[2:])}
    if len(zooms) != 1 or any(int(o) % int(n) for o, n in zip(output_shape, latent.shape[2:])):
        raise ConditionError(
            f"output grid {list(output_shape)} is not the latent {list(latent.shape[2:])} zoomed by one whole factor"
        )
    zoom = zooms.pop()
    budget = max_output_voxels or WINDOW_OUTPUT_VOXELS["half" if precision.autocasting else "float32"]
    roi = window_roi(latent.shape[2:], zoom, budget, split_minimum(autoencoder))
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=1, overlap=WINDOW_OVERLAP, mode="gaussian")

    def predictor(window: torch.Tensor) -> torch.Tensor:
        with precision.autocast():
            return autoencoder.decode_stage_2_outputs(precision.layout(window)).float()

    with torch.inference_mode():
        out = inferer(latent, predictor).float().contiguous()
    return out, {"mode": "windows", "latent_window": list(roi), "overlap": WINDOW_OVERLAP, "blend": "gaussian"}


def auto_decode_mode(
    autoencoder: torch.nn.Module, output_shape: Sequence[int] | None, precision: Precision, decoder_inputs: tuple = ()
) -> str:
    """``slab`` when the decoder can run in slabs and a full decode is estimated
    (:func:`full_decode_bytes`) to need more than :data:`SLAB_ABOVE_BYTES` on the CPU, or more than
    :data:`AUTO_TILE_MEMORY_FRACTION` of the device's memory; else ``full``. It depends only on the
    model and the machine, so a given machine always makes the same choice (provenance records it)."""
    if decoder_inputs or not output_shape:
        return "full"
    need = full_decode_bytes(autoencoder, output_shape, precision)
    limit = AUTO_TILE_MEMORY_FRACTION * device_memory_bytes(precision.device)
    if not can_decode_in_slabs(autoencoder):
        # Windows are approximate and cost overlap: only where a full decode would not fit.
        if precision.device.type == "cpu":
            limit = min(limit, WINDOWS_ABOVE_BYTES)
        return "windows" if need > limit and hasattr(autoencoder, "decode_stage_2_outputs") else "full"
    if precision.device.type == "cpu":
        limit = min(limit, SLAB_ABOVE_BYTES)
    return "slab" if need > limit else "full"


def can_decode_in_slabs(autoencoder: torch.nn.Module) -> bool:
    try:
        slab_blocks(autoencoder)
    except ConditionError:
        return False
    return True


def decode(
    autoencoder: torch.nn.Module,
    latent: torch.Tensor,
    precision: Precision,
    *,
    mode: str = "auto",
    output_shape: Sequence[int] | None = None,
    decoder_inputs: tuple = (),
    settings: TileSettings | None = None,
    slab_settings: SlabSettings | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Decode with the chosen ``mode`` and say how it was done (for provenance).

    Args:
        autoencoder: the card's autoencoder.
        latent: (B, C, x, y, z) float32, already divided by the card's scale factor.
        precision: autocast dtype / memory layout.
        mode: ``full``, ``slab``, ``tiled``, ``windows`` or ``auto`` (:func:`auto_decode_mode`).
        output_shape: the card's output shape (X, Y, Z), for ``auto``.
        decoder_inputs: extra decoder arguments (SPADE: the label map); only with ``full``.
        settings: window size, overlap, blending and GroupNorm statistics of a tiled decode.
        slab_settings: slab temporaries and levels of a slab decode.

    Returns:
        (decoded float32 (B, C_out, X, Y, Z) on the latent's device, record of the mode used).
    """
    mode = check_decode_mode(mode)
    settings = settings or TileSettings()
    if mode == "auto":
        mode = auto_decode_mode(autoencoder, output_shape, precision, decoder_inputs)
    if mode == "slab":
        if decoder_inputs:
            raise ConditionError(
                "decode 'slab' is not available for SPADE decoders (they take the label map); use decode 'full'"
            )
        slab_settings = slab_settings or SlabSettings()
        return decode_slabs(autoencoder, latent, precision, slab_settings), {"mode": "slab", **slab_settings.record()}
    if mode == "windows":
        if decoder_inputs:
            raise ConditionError(
                "decode 'windows' is not available for SPADE decoders (they take the label map); use decode 'full'"
            )
        if output_shape is None:
            raise ConditionError("decode 'windows' needs the output grid")
        return decode_windows(autoencoder, latent, precision, output_shape)
    if mode == "tiled":
        if decoder_inputs:
            raise ConditionError(
                "decode 'tiled' is not available for SPADE decoders (they take the label map); use decode 'full'"
            )
        return decode_tiled(autoencoder, latent, precision, settings), {"mode": "tiled", **settings.record(precision)}
    return decode_full(autoencoder, latent, precision, decoder_inputs), {"mode": "full"}
