"""Slab decoding: a ``monai.networks.nets.AutoencoderKL`` decoder run slab by slab along one axis.

Why: a full decode of Brain LDM's 160x224x160 output holds several 128-channel tensors of the full
grid at once (4.9 GB peak in bfloat16, 9.3 GB in float32). The windowed decode of
:mod:`.decoding` bounds memory but measures each GroupNorm's statistics by re-running the decoder's
last level up to that norm, which makes it 7x slower. Here nothing is run twice that need not be:

* The decoder's low-resolution blocks run whole (they are small). From the upsampling into the
  second-highest level on, every block runs in **slabs** along the first spatial axis, each read
  with an **exact halo** (one voxel per 3x3x3 convolution still to come in that pass), so every
  slab's output equals the full decode's rows to float rounding.
* **GroupNorm statistics are of the whole volume**, as in the full decode: a block's output is
  written to a stored tensor slab by slab while its per-channel sums are accumulated (float64), so
  the next norm's statistics are known when that tensor is complete.
* A residual block with a stored input keeps at most **one** extra full-grid tensor: either its
  first convolution's output (then the block's output overwrites it, slab by slab), or - when the
  input and output have the same channels and a second tensor would not fit the budget - nothing:
  the first convolution is run once for its statistics and again, with a wider halo, for the output,
  which overwrites the input. Writes lag one slab behind so a slab is never overwritten while its
  neighbour still needs it as a halo.
* An **upsampling** output (nearest x2, then a 3x3x3 convolution - the largest tensor of the
  decoder: 128 channels on the full grid) is never stored. It is recomputed from its half-resolution
  input whenever it is read, as the equivalent transposed convolution (kernel 4, stride 2; the
  convolution's taps summed per output phase), which does 8 multiply-adds per output voxel and
  channel pair instead of 27: exact in real arithmetic, 2.8x faster than interpolating and convolving
  on this CPU.

Measurements (time, peak memory, PSNR against the full float32 decode): docs/benchmarks.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConditionError
from .device import Precision

#: Bytes the slab temporaries of one pass may use (the stored full-grid tensors come on top).
DEFAULT_SLAB_BYTES = 256 * 2**20

#: Values per chunk when summing a slab for GroupNorm statistics (1 MB of float32: stays in cache).
CHUNK_VALUES = 2**18

#: Bytes a second stored full-grid tensor may take before a residual block switches to recomputing
#: its first convolution (and writes over its input instead).
DEFAULT_SECOND_TENSOR_BYTES = 512 * 2**20


@dataclass(frozen=True)
class SlabSettings:
    """How a slab decode cuts the work.

    Attributes:
        slab_bytes: temporaries per slab (bytes); slabs are as thick as that allows (at least 4 rows).
        second_tensor_bytes: largest extra full-grid tensor a residual block may keep.
        levels: decoder levels (counted from the output) that run in slabs; the rest run whole.
    """

    slab_bytes: int = DEFAULT_SLAB_BYTES
    second_tensor_bytes: int = DEFAULT_SECOND_TENSOR_BYTES
    levels: int = 2

    def record(self) -> dict:
        return {"slab_bytes": self.slab_bytes, "second_tensor_bytes": self.second_tensor_bytes, "levels": self.levels}


# ----------------------------------------------------------------------------------------------
# Whole-volume GroupNorm statistics, accumulated slab by slab
# ----------------------------------------------------------------------------------------------
class ChannelSums:
    """Per (batch, channel) sums of x and x^2 over every voxel added so far (float64)."""

    def __init__(self) -> None:
        self.count = 0
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        # Channels-last tensors are (B, voxels, C) in memory. Converting a whole bfloat16 slab to
        # float32 and squaring it runs at memory speed (~175 ms per 32 M values on this CPU);
        # chunks of ~1 MB stay in cache and take ~9 ms.
        b, c = x.shape[:2]
        flat = x.permute(0, *range(2, x.ndim), 1).reshape(b, -1, c)
        s1 = torch.zeros((b, c), dtype=torch.float64)
        s2 = torch.zeros((b, c), dtype=torch.float64)
        for chunk in flat.split(max(CHUNK_VALUES // c, 1), dim=1):
            f = chunk.to(torch.float32, copy=True)
            s1 += f.sum(1)
            s2 += f.square_().sum(1)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.count += flat.shape[1]

    def norm_affine(self, gn: torch.nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each (B, C, 1, 1, 1) float32, with ``gn(x) == x * scale + shift`` for the
        whole volume these sums describe."""
        b, c = self.s1.shape
        per = c // gn.num_groups
        n = self.count * per
        mean = self.s1.view(b, gn.num_groups, per).sum(-1) / n
        var = (self.s2.view(b, gn.num_groups, per).sum(-1) / n - mean * mean).clamp_min(0.0)
        inv = (var + gn.eps).rsqrt().repeat_interleave(per, dim=1)
        shift = -mean.repeat_interleave(per, dim=1) * inv
        scale = inv
        if gn.affine:
            scale, shift = scale * gn.weight.double(), shift * gn.weight.double() + gn.bias.double()
        shape = (b, c, 1, 1, 1)
        return scale.float().view(shape), shift.float().view(shape)


# ----------------------------------------------------------------------------------------------
# Sources of rows: stored tensors and recomputed upsamplings
# ----------------------------------------------------------------------------------------------
class Stored:
    """A full-grid tensor held in memory, with the sums of its values once they are complete."""

    def __init__(self, tensor: torch.Tensor, sums: ChannelSums | None = None) -> None:
        self.tensor = tensor
        self.sums = sums

    @property
    def rows(self) -> int:
        return self.tensor.shape[2]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    def read(self, lo: int, hi: int) -> torch.Tensor:
        return self.tensor[:, :, max(lo, 0) : min(hi, self.rows)]


def _conv3d(module: torch.nn.Module) -> torch.nn.Conv3d:
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv3d)]
    if len(convs) != 1:
        raise ConditionError(f"decode 'slab' expected one Conv3d in {type(module).__name__}, found {len(convs)}")
    conv = convs[0]
    k, p = conv.kernel_size[0], conv.padding[0]
    if set(conv.stride) != {1} or set(conv.dilation) != {1} or conv.groups != 1 or 2 * p != k - 1:
        raise ConditionError("decode 'slab' needs stride-1, 'same'-padded convolutions in the decoder")
    return conv


def transposed_upsampling_weight(conv: torch.nn.Conv3d) -> torch.Tensor:
    """Weight of the transposed convolution (kernel 4, stride 2, padding 1) that equals nearest x2
    upsampling followed by ``conv`` (3x3x3, padding 1).

    Along one axis, output voxel ``2m`` reads upsampled voxels ``2m-1, 2m, 2m+1`` = inputs ``m-1, m,
    m``, and ``2m+1`` reads ``m, m, m+1``: per phase, two input taps, one of them the sum of two
    convolution taps. ``M`` maps the 3 convolution taps to the 4 transposed-kernel taps.
    """
    w = conv.weight.detach().double()  # (out, in, 3, 3, 3)
    m = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.float64)
    k = torch.einsum("ax,by,cz,oixyz->ioabc", m, m, m, w)  # (in, out, 4, 4, 4)
    return k.to(conv.weight.dtype).contiguous()


class Upsampled:
    """Rows of ``UpSample(nearest x2) -> conv`` of a stored tensor, recomputed on every read."""

    def __init__(self, source: Stored, block: torch.nn.Module) -> None:
        conv = _conv3d(block)
        if conv.kernel_size != (3, 3, 3):
            raise ConditionError("decode 'slab' needs the upsampling's convolution to be 3x3x3")
        self.source = source
        self.weight = transposed_upsampling_weight(conv)
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.sums: ChannelSums | None = None

    def then(self, conv: torch.nn.Conv3d) -> "Upsampled":
        """This upsampling followed by a 1x1x1 ``conv``, as one transposed convolution: a residual
        block's shortcut of the upsampled tensor costs half a recomputation of it (128 -> 64
        channels) instead of a whole one."""
        w = conv.weight.detach().double()[:, :, 0, 0, 0]  # (out, mid)
        composed = object.__new__(Upsampled)
        composed.source, composed.sums = self.source, None
        composed.weight = torch.einsum("imabc,om->ioabc", self.weight.double(), w).to(self.weight.dtype).contiguous()
        bias = torch.zeros(w.shape[1], dtype=torch.float64) if self.bias is None else self.bias.double()
        bias = w @ bias + (0.0 if conv.bias is None else conv.bias.detach().double())
        composed.bias = bias.to(self.weight.dtype)
        return composed

    @property
    def rows(self) -> int:
        return 2 * self.source.rows

    @property
    def shape(self) -> tuple[int, ...]:
        b, _, d, h, w = self.source.shape
        return (b, self.weight.shape[1], 2 * d, 2 * h, 2 * w)

    def read(self, lo: int, hi: int) -> torch.Tensor:
        lo, hi = max(lo, 0), min(hi, self.rows)
        s, e = max(lo // 2 - 1, 0), min((hi - 1) // 2 + 2, self.source.rows)
        out = F.conv_transpose3d(self.source.read(s, e), self.weight, self.bias, stride=2, padding=1)
        return out[:, :, lo - 2 * s : hi - 2 * s]


Source = Stored | Upsampled


# ----------------------------------------------------------------------------------------------
# The slab executor
# ----------------------------------------------------------------------------------------------
def _conv_rows(conv: torch.nn.Conv3d, x: torch.Tensor, x_lo: int, rows: int, a: int, b: int) -> torch.Tensor:
    """Rows ``[a, b)`` of ``conv`` over the whole volume (``rows`` long), given ``x`` = activated
    input rows ``[x_lo, x_lo + len)`` that cover ``[a - p, b + p)`` inside the volume; rows outside
    the volume are the convolution's zero padding."""
    p = conv.padding[0]
    lo, hi = a - p, b + p
    x = x[:, :, max(lo, 0) - x_lo : min(hi, rows) - x_lo]
    if lo < 0 or hi > rows:
        x = F.pad(x, (0, 0, 0, 0, max(-lo, 0), max(hi - rows, 0)))
    return F.conv3d(x, conv.weight, conv.bias, padding=(0, p, p))


def frozen_norm(x: torch.Tensor, affine: tuple[torch.Tensor, torch.Tensor], silu: bool = False) -> torch.Tensor:
    """GroupNorm with whole-volume statistics (the affine map of :meth:`ChannelSums.norm_affine`),
    then SiLU if asked, in ``x``'s dtype.

    bfloat16 elementwise ops compute in float32 and round once, so for bfloat16 storage this differs
    from autocast's float32 norm only by rounding the normalised values before SiLU; it saves two
    float32 copies of the slab. Returns a new tensor: never writes into ``x``.
    """
    y = torch.addcmul(affine[1].to(x.dtype), x, affine[0].to(x.dtype))
    return F.silu(y, inplace=True) if silu else y


class _LaggedWriter:
    """Writes slab outputs into a stored tensor one slab late, so that the slab just computed can
    still read its predecessor's original rows as a halo."""

    def __init__(self, target: torch.Tensor, sums: ChannelSums) -> None:
        self.target, self.sums, self.pending = target, sums, None

    def push(self, a: int, y: torch.Tensor) -> None:
        self.flush()
        self.sums.add(y)
        self.pending = (a, y)

    def flush(self) -> None:
        if self.pending is not None:
            a, y = self.pending
            self.target[:, :, a : a + y.shape[2]] = y
            self.pending = None


class SlabDecoder:
    """Runs an ``AutoencoderKL`` decoder as described in the module docstring."""

    def __init__(self, autoencoder: torch.nn.Module, precision: Precision, settings: SlabSettings | None = None):
        self.autoencoder = autoencoder
        self.precision = precision
        self.settings = settings or SlabSettings()
        self.storage = torch.float32 if not precision.autocasting else precision.dtype
        self.blocks, self.start = slab_blocks(autoencoder, self.settings.levels)

    # -- helpers ---------------------------------------------------------------------------
    def _slabs(self, source: Source, channels: int, copies: int = 3) -> list[tuple[int, int]]:
        """Slabs of ``source``'s rows whose ``copies`` temporaries of ``max(channels, source's)``
        channels fit :attr:`SlabSettings.slab_bytes`; an even thickness, so that an upsampled slab
        starts on a whole input row."""
        b, _, rows, h, w = source.shape
        per_row = b * h * w * max(channels, source.shape[1]) * copies * self.storage.itemsize
        t = max(4, min(rows, self.settings.slab_bytes // max(per_row, 1)) // 2 * 2)
        return [(a, min(a + t, rows)) for a in range(0, rows, t)]

    def _empty(self, like: tuple[int, ...], channels: int) -> torch.Tensor:
        b, _, d, h, w = like
        return torch.empty((b, channels, d, h, w), dtype=self.storage, memory_format=torch.channels_last_3d)

    def _sums(self, source: Source) -> ChannelSums:
        if source.sums is None:
            sums = ChannelSums()
            for a, b in self._slabs(source, source.shape[1], copies=1):
                sums.add(source.read(a, b))
            source.sums = sums
        return source.sums

    # -- blocks ----------------------------------------------------------------------------
    def resblock(self, block: torch.nn.Module, x: Source) -> Stored:
        """``AEKLResBlock``: ``x + conv2(silu(norm2(conv1(silu(norm1(x))))))`` (shortcut conv if the
        channels change). Keeps conv1's output unless a second full-grid tensor would exceed
        :attr:`SlabSettings.second_tensor_bytes` and the input can be overwritten."""
        out_ch = _conv3d(block.conv1).out_channels
        second_bytes = math.prod(x.shape[:1] + x.shape[2:]) * out_ch * self.storage.itemsize
        identity = isinstance(block.nin_shortcut, torch.nn.Identity)
        if isinstance(x, Stored) and identity and second_bytes > self.settings.second_tensor_bytes:
            return self._resblock_recomputing(block, x)
        return self._resblock_keeping(block, x)

    def _resblock_keeping(self, block: torch.nn.Module, x: Source) -> Stored:
        conv1, conv2 = _conv3d(block.conv1), _conv3d(block.conv2)
        n1 = self._sums(x).norm_affine(block.norm1)
        rows = x.rows
        if isinstance(block.nin_shortcut, torch.nn.Identity):
            shortcut, skip = x, None
        elif isinstance(x, Upsampled):
            shortcut, skip = x.then(_conv3d(block.nin_shortcut)), None
        else:
            shortcut, skip = x, block.nin_shortcut
        h_store, h_sums = self._empty(x.shape, conv1.out_channels), ChannelSums()
        for a, b in self._slabs(x, conv1.out_channels):
            h = _conv_rows(conv1, frozen_norm(x.read(a - 1, b + 1), n1, silu=True), max(a - 1, 0), rows, a, b)
            h = h.to(self.storage)
            h_sums.add(h)
            h_store[:, :, a:b] = h
            del h
        n2 = h_sums.norm_affine(block.norm2)
        out_sums = ChannelSums()
        writer = _LaggedWriter(h_store, out_sums)
        for a, b in self._slabs(x, conv1.out_channels):
            hs = frozen_norm(h_store[:, :, max(a - 1, 0) : min(b + 1, rows)], n2, silu=True)
            y = _conv_rows(conv2, hs, max(a - 1, 0), rows, a, b)
            del hs
            res = shortcut.read(a, b)
            y = y.add_(res if skip is None else skip(res)).to(self.storage)
            del res
            writer.push(a, y)
        writer.flush()
        return Stored(h_store, out_sums)

    def _resblock_recomputing(self, block: torch.nn.Module, x: Stored) -> Stored:
        conv1, conv2 = _conv3d(block.conv1), _conv3d(block.conv2)
        n1 = self._sums(x).norm_affine(block.norm1)
        rows = x.rows
        slabs = self._slabs(x, conv1.out_channels, copies=6)
        h_sums = ChannelSums()
        for a, b in slabs:
            h_sums.add(_conv_rows(conv1, frozen_norm(x.read(a - 1, b + 1), n1, silu=True), max(a - 1, 0), rows, a, b))
        n2 = h_sums.norm_affine(block.norm2)
        out_sums = ChannelSums()
        writer = _LaggedWriter(x.tensor, out_sums)
        for a, b in slabs:
            lo, hi = max(a - 1, 0), min(b + 1, rows)  # conv1 rows that conv2 reads
            h = _conv_rows(conv1, frozen_norm(x.read(lo - 1, hi + 1), n1, silu=True), max(lo - 1, 0), rows, lo, hi)
            hs = frozen_norm(h, n2, silu=True)
            del h
            y = _conv_rows(conv2, hs, lo, rows, a, b)
            del hs
            writer.push(a, y.add_(x.read(a, b)).to(self.storage))
            del y
        writer.flush()
        return Stored(x.tensor, out_sums)

    def convolution(self, block: torch.nn.Module, x: Source, norm: torch.nn.GroupNorm | None, last: bool) -> Stored:
        conv = _conv3d(block)
        affine = self._sums(x).norm_affine(norm) if norm is not None else None
        rows, p = x.rows, conv.padding[0]
        b_, _, d, h, w = x.shape
        dtype = torch.float32 if last else self.storage
        out = torch.empty((b_, conv.out_channels, d, h, w), dtype=dtype, memory_format=torch.channels_last_3d)
        sums = None if last else ChannelSums()
        for a, b in self._slabs(x, conv.out_channels):
            xs = x.read(a - p, b + p)
            xs = frozen_norm(xs, affine, silu=False) if affine is not None else xs
            y = _conv_rows(conv, xs, max(a - p, 0), rows, a, b)
            out[:, :, a:b] = y
            if sums is not None:
                sums.add(y)
        return Stored(out, sums)

    # -- the whole decode --------------------------------------------------------------------
    def __call__(self, latent: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Decode ``latent`` (B, C, x, y, z), already divided by the scale factor; float32 output."""
        precision = self.precision
        with torch.inference_mode(), precision.autocast():
            z = self.autoencoder.post_quant_conv(precision.layout(latent))
            for block in self.blocks[: self.start]:
                z = block(z)
            source: Source = Stored(z.to(self.storage).contiguous(memory_format=torch.channels_last_3d))
            del z
            norm = None
            tail = self.blocks[self.start :]
            for i, block in enumerate(tail):
                name = type(block).__name__
                if name == "UpSample":
                    source = Upsampled(source, block)
                elif name == "AEKLResBlock":
                    source = self.resblock(block, source)
                elif isinstance(block, torch.nn.GroupNorm):
                    norm = block
                else:
                    source = self.convolution(block, source, norm, last=i == len(tail) - 1)
                    norm = None
                if progress is not None:
                    progress(i + 1, len(tail))
        return source.tensor.float().contiguous()


def slab_blocks(autoencoder: torch.nn.Module, levels: int = 2) -> tuple[list[torch.nn.Module], int]:
    """(decoder blocks, index of the first block run in slabs) of an ``AutoencoderKL``.

    Raises:
        ConditionError: not an ``AutoencoderKL`` with nearest-upsampling decoder levels, or a block
            after the split that slabs cannot run (attention, transposed convolutions).
    """
    from monai.networks.nets import AutoencoderKL

    if type(autoencoder) is not AutoencoderKL:
        raise ConditionError(
            f"decode 'slab' needs a monai AutoencoderKL decoder; this model has {type(autoencoder).__name__}: "
            "use decode 'full'"
        )
    blocks = list(autoencoder.decoder.blocks)
    ups = [i for i, b in enumerate(blocks) if type(b).__name__ == "UpSample"]
    if not ups:
        raise ConditionError("decode 'slab' needs a decoder with upsampling levels: use decode 'full'")
    start = ups[-min(max(int(levels), 1), len(ups))]
    for block in blocks[start:]:
        name = type(block).__name__
        if name == "UpSample":
            interp = getattr(block, "upsample_non_trainable", None)
            ok = isinstance(interp, torch.nn.Upsample) and interp.mode == "nearest"
            ok = ok and tuple(float(s) for s in torch.nn.modules.utils._triple(interp.scale_factor)) == (2.0,) * 3
            if not ok or not hasattr(block, "postconv") or hasattr(block, "preconv"):
                raise ConditionError("decode 'slab' needs nearest x2 upsampling followed by a convolution")
        elif name not in ("AEKLResBlock", "Convolution") and not isinstance(block, torch.nn.GroupNorm):
            raise ConditionError(f"decode 'slab' cannot run a {name} block in slabs: use decode 'full'")
    return blocks, start


def decode_slabs(
    autoencoder: torch.nn.Module, latent: torch.Tensor, precision: Precision, settings: SlabSettings | None = None
) -> torch.Tensor:
    """Decode ``latent`` (B, C, x, y, z) slab by slab; float32 (B, C_out, X, Y, Z) like a full decode."""
    return SlabDecoder(autoencoder, precision, settings)(latent)
