"""Reading, verifying and loading checkpoints safely.

* Files are read with ``torch.load(weights_only=True)`` or safetensors: nothing in a checkpoint is
  ever executed.
* Checksums (sha256, or the md5 that MONAI bundles publish) are verified when the card knows them.
* Checkpoints written by the old GenerativeModels package (``generative`` 0.2.x, used for the MONAI
  model-zoo brain bundles) are detected and converted to MONAI's current key layout.
* Loading is strict: a checkpoint that does not fit the network names its missing and unexpected
  keys, or the first mismatching shape.

Why our own converter instead of MONAI's ``load_old_state_dict``: GenerativeModels 0.2.3's spatial
``AttentionBlock`` (in AutoencoderKL and in DiffusionModelUNet self-attention) defines ``proj_attn``
but never applies it in ``forward``. MONAI's converter copies ``proj_attn`` into ``attn.out_proj``,
which *is* applied, so a converted model silently computes something else (max abs difference up
to 3.2 on a trained autoencoder with attention; MONAI issue #8030). We set ``out_proj`` to the
identity instead, which reproduces the old forward exactly; ``Testing/test_checkpoints.py`` checks
the equivalence numerically against the old package for every network class we load.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Mapping

import torch

from ..errors import CheckpointError

#: Wrapper keys some training scripts put around the state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "network", "net", "weights", "unet_state_dict")


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
#: ``torch.load(weights_only=True)`` can be made to run code below this torch version
#: (CVE-2025-32434, fixed in 2.6; CVE-2026-24747, fixed in 2.10).
SAFE_TORCH_LOAD = (2, 10)


def torch_version_tuple(version: str | None = None) -> tuple[int, int]:
    """(major, minor) of a torch version string such as ``2.13.0+cpu``."""
    parts = (version or torch.__version__).split("+")[0].split(".")
    return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)


def require_safe_torch_load() -> None:
    """Refuse pickle-based checkpoints on a torch whose ``weights_only`` loading can be bypassed."""
    if torch_version_tuple() < SAFE_TORCH_LOAD:
        raise CheckpointError(
            f"torch {torch.__version__} can be made to run code from a .pt/.pth checkpoint despite weights_only "
            "(CVE-2025-32434, CVE-2026-24747); upgrade to torch >= "
            f"{SAFE_TORCH_LOAD[0]}.{SAFE_TORCH_LOAD[1]}, or use .safetensors weights"
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict on the CPU.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, which refuses pickled code. A checkpoint wrapped in a dict
    (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped.

    Raises:
        CheckpointError: missing, truncated, not a checkpoint, or not a dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            data = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {path.name} cannot be read as safetensors (truncated or corrupt): {_first_line(exc)}"
            ) from None
    else:
        require_safe_torch_load()
        try:
            with (
                warnings.catch_warnings()
            ):  # torch warns about old pickle protocols; the file is refused or read, nothing more
                warnings.simplefilter("ignore")
                data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"checkpoint {path.name} holds more than tensors and was refused (weights_only loading): "
                f"{_first_line(exc)}"
            ) from None
        except Exception as exc:  # torch's reader fails in many ways on files that are not checkpoints
            raise CheckpointError(
                f"checkpoint {path.name} cannot be read (truncated or not a PyTorch checkpoint): {type(exc).__name__}: "
                f"{_first_line(exc)}"
            ) from None
    return _flatten(data, path.name)


def read_checkpoint_number(path: str | Path, key: str) -> float:
    """A number stored beside the state dict in a ``.pt`` checkpoint (e.g. MAISI's ``scale_factor``
    beside ``unet_state_dict``), read with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: the file cannot be read, or holds no finite number under ``key``.
    """
    path = Path(path)
    require_safe_torch_load()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Memory-mapped where the format allows (zip checkpoints): the number is read without
            # reading the weights beside it, which the network loader reads next anyway.
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # refused pickles and unreadable files alike: read_state_dict words them
        read_state_dict(path)
        raise CheckpointError(f"checkpoint {path.name} cannot be read: {_first_line(exc)}") from None
    value = data.get(key) if isinstance(data, Mapping) else None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value.reshape(()).item())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CheckpointError(f"checkpoint {path.name} holds no number '{key}' (got {type(value).__name__})")
    return float(value)


def _flatten(data: object, name: str) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(data, Mapping) and not _all_tensors(data):
            inner = [k for k in _WRAPPER_KEYS if isinstance(data.get(k), Mapping)]
            if inner:
                data = data[inner[0]]
                continue
        break
    if not isinstance(data, Mapping) or not data or not _all_tensors(data):
        raise CheckpointError(f"checkpoint {name} is not a state dict of tensors")
    return {str(k): v for k, v in data.items()}


def _all_tensors(data: Mapping) -> bool:
    return all(isinstance(v, torch.Tensor) for v in data.values())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------
# GenerativeModels (0.2.x) -> MONAI key layout
# ----------------------------------------------------------------------------------------------
_SELF_ATTN_QKV = re.compile(r"^(.*)\.attn\.to_([qkv])\.(weight|bias)$")
_SELF_ATTN_OUT = re.compile(r"^(.*)\.attn\.out_proj\.(weight|bias)$")
_CROSS_ATTN_OUT = re.compile(r"^(.*)\.out_proj\.(weight|bias)$")


def convert_generative_state_dict(
    old: Mapping[str, torch.Tensor], model: torch.nn.Module
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map an old GenerativeModels state dict onto ``model``'s keys.

    For every key the MONAI network expects, find where the old layout kept it:

    ============================================  ==============================================
    MONAI key                                     GenerativeModels 0.2.x key
    ============================================  ==============================================
    ``<block>.attn.to_{q,k,v}.{weight,bias}``     ``<block>.to_{q,k,v}.{weight,bias}``
    ``<block>.attn.out_proj.{weight,bias}``       none: identity / zeros (``proj_attn`` was unused)
    ``<...>.attn{1,2}.out_proj.{weight,bias}``    ``<...>.attn{1,2}.to_out.0.{weight,bias}``
    ``<...>.postconv.<...>``                      ``<...>.conv.<...>``
    ``<...>.param_free_norm.<p>`` (SPADE)         ``<...>.param_free_norm.N.<p>`` (was an ADN)
    anything else                                 the same key
    ============================================  ==============================================

    Returns:
        The converted state dict (keys missing from ``old`` are left out) and the old keys that
        were not used (``<block>.proj_attn.*`` is consumed on purpose and not listed).
    """
    expected = model.state_dict()
    used: set[str] = set()
    new: dict[str, torch.Tensor] = {}

    def take(new_key: str, old_key: str) -> bool:
        if old_key in old:
            new[new_key] = old[old_key]
            used.add(old_key)
            return True
        return False

    for key, ref in expected.items():
        if take(key, key):
            continue
        m = _SELF_ATTN_QKV.match(key)
        if m and take(key, f"{m[1]}.to_{m[2]}.{m[3]}"):
            continue
        m = _SELF_ATTN_OUT.match(key)
        if m and (f"{m[1]}.to_q.weight" in old or f"{m[1]}.proj_attn.weight" in old):
            # The old AttentionBlock returned attention(x) + x without its proj_attn: identity here.
            new[key] = torch.eye(ref.shape[0], dtype=ref.dtype) if m[2] == "weight" else torch.zeros_like(ref)
            used.update(k for k in (f"{m[1]}.proj_attn.weight", f"{m[1]}.proj_attn.bias") if k in old)
            continue
        m = _CROSS_ATTN_OUT.match(key)
        if m and take(key, f"{m[1]}.to_out.0.{m[2]}"):
            continue
        if ".postconv." in key and take(key, key.replace(".postconv.", ".conv.")):
            continue
        if ".param_free_norm." in key and take(key, key.replace(".param_free_norm.", ".param_free_norm.N.")):
            continue
    unused = [k for k in old if k not in used]
    return new, unused


# ----------------------------------------------------------------------------------------------
# Strict loading
# ----------------------------------------------------------------------------------------------
def load_weights(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], fmt: str = "auto", name: str = "checkpoint"
) -> str:
    """Load ``state_dict`` into ``model`` strictly, converting the old layout when needed.

    Args:
        model: the MONAI network built from the card.
        state_dict: as returned by :func:`read_state_dict`.
        fmt: ``auto`` (detect), ``monai``/``safetensors`` (keys must match as they are) or
            ``generative`` (always convert).
        name: how to call the checkpoint in errors.

    Returns:
        The layout that was loaded: ``"monai"`` or ``"generative"``.

    Raises:
        CheckpointError: keys or shapes do not fit; the message names the missing and unexpected
            keys (first three of each, with counts) or the first mismatching shape.
    """
    expected = model.state_dict()
    direct_missing = [k for k in expected if k not in state_dict]
    direct_unexpected = [k for k in state_dict if k not in expected]
    if fmt in ("monai", "safetensors") or (fmt == "auto" and not direct_missing and not direct_unexpected):
        layout, candidate, missing, unexpected = "monai", dict(state_dict), direct_missing, direct_unexpected
    else:
        candidate, unexpected = convert_generative_state_dict(state_dict, model)
        missing = [k for k in expected if k not in candidate]
        layout = "generative"
        if fmt == "auto" and len(missing) + len(unexpected) > len(direct_missing) + len(direct_unexpected):
            # Neither layout fits: report against the closer one (the checkpoint's own keys).
            layout, missing, unexpected = "monai", direct_missing, direct_unexpected
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_few(unexpected)})")
        raise CheckpointError(
            f"{name} does not fit {type(model).__name__} as described by the card: " + "; ".join(parts)
        )
    for key, ref in expected.items():
        if tuple(candidate[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{name} does not fit {type(model).__name__} as described by the card: {key} has shape "
                f"{tuple(candidate[key].shape)} in the checkpoint and {tuple(ref.shape)} in the network"
            )
    model.load_state_dict(candidate, strict=True)
    if layout == "generative":
        match_generative_numerics(model)
    return layout


def match_generative_numerics(model: torch.nn.Module) -> int:
    """Reproduce GenerativeModels 0.2.x arithmetic that differs beyond the key layout.

    GenerativeModels' ``SPADEAutoencoderKL`` built the parameter-free GroupNorm inside each SPADE
    block with torch's default ``eps=1e-5``, ignoring ``norm_eps``; MONAI passes ``norm_eps``
    (default 1e-6). That shifts a trained decoder's output by ~1e-4, so for checkpoints in the old
    layout we restore 1e-5. Returns the number of norms changed.
    """
    from monai.networks.blocks.spade_norm import SPADE
    from monai.networks.nets import SPADEAutoencoderKL

    if not isinstance(model, SPADEAutoencoderKL):
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, SPADE) and isinstance(module.param_free_norm, torch.nn.GroupNorm):
            module.param_free_norm.eps = 1e-5
            changed += 1
    return changed


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (", ..." if len(keys) > n else "")


def read_style_codes(card, path: Path) -> dict[str, torch.Tensor]:
    """Per-sequence style statistics of a SPADE card: ``<SEQ>.mean`` and ``<SEQ>.std``, each (z_dim,)."""
    codes = read_state_dict(path)
    z_dim = card.networks["generator"].kwargs.get("z_dim") if "generator" in card.networks else None
    for seq in card.sequences.names:
        for stat in ("mean", "std"):
            key = f"{seq}.{stat}"
            if key not in codes:
                raise CheckpointError(
                    f"style codes {Path(path).name} lack '{key}' (sequences: {', '.join(card.sequences.names)})"
                )
            if codes[key].ndim != 1 or (z_dim is not None and codes[key].shape[0] != z_dim):
                raise CheckpointError(
                    f"style codes {Path(path).name}: '{key}' has shape {tuple(codes[key].shape)}, expected ({z_dim},)"
                )
    return codes


def read_template(card, path: Path) -> dict[str, torch.Tensor]:
    """A card's template: ``labels`` (X, Y, Z) uint8 on the card's output grid, values among its labels."""
    tensors = read_state_dict(path)
    labels = tensors.get("labels")
    name = Path(path).name
    if labels is None:
        raise CheckpointError(f"template {name} lacks 'labels'")
    if tuple(labels.shape) != tuple(card.output.shape) or labels.dtype != torch.uint8:
        raise CheckpointError(
            f"template {name}: 'labels' is {labels.dtype} {tuple(labels.shape)}, expected uint8 "
            f"{tuple(card.output.shape)} (the model grid)"
        )
    if card.labels is None or int(labels.max()) >= len(card.labels):
        raise CheckpointError(f"template {name}: label value {int(labels.max())} is not one of the card's labels")
    return {"labels": labels}
