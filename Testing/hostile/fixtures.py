"""Hostile and broken inputs, shared by the adversarial campaign (:mod:`hostile.campaign`) and the
pytest rows of Testing/test_security.py: NIfTI/NRRD files with bad geometry or headers, cards made
wrong field by field, checkpoints that run code when unpickled, deeply nested JSON, perturbed weights.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[2]
#: The shipped demo models (card.json + weights).
SHIPPED = REPO / "Resources" / "Models"


def card_of(model: str = "brain-ldm-demo") -> dict:
    """A shipped demo model's card, as JSON data."""
    return json.loads((SHIPPED / model / "card.json").read_text())


DEMO_AFFINE = np.asarray(card_of("label2image-demo")["output"]["affine"], dtype=np.float64)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def phantom_labels(shape=(64, 80, 64)) -> np.ndarray:
    ii, jj, kk = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(ii**2 + jj**2 + kk**2)
    lab = np.zeros(shape, np.uint8)
    lab[r < 0.85] = 2
    lab[r < 0.7] = 3
    lab[r < 0.25] = 1
    lab[r < 0.12] = 4
    lab[(np.abs(ii - 0.3) < 0.08) & (np.abs(jj) < 0.08) & (np.abs(kk - 0.2) < 0.08)] = 6
    lab[(kk < -0.6) & (r < 0.9) & (np.abs(ii) < 0.15) & (np.abs(jj) < 0.2)] = 5
    return lab


def save_nii(path: Path, array, affine=None, header_edit: Callable | None = None) -> Path:
    import nibabel as nib

    array = np.asarray(array)
    extra = {"dtype": array.dtype} if array.dtype in (np.int64, np.uint64) else {}
    img = nib.Nifti1Image(array, DEMO_AFFINE if affine is None else np.asarray(affine, dtype=np.float64), **extra)
    if header_edit is not None:
        header_edit(img)
    img.to_filename(str(path))
    return path


def nifti_with_sform(path: Path, array, sform) -> Path:
    """A NIfTI whose sform is ``sform`` exactly (zero, singular, NaN) and whose qform is unset."""
    import nibabel as nib

    arr = np.asarray(array)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(arr.dtype)
    hdr.set_data_shape(arr.shape)
    hdr["vox_offset"] = 352
    s = np.asarray(sform, dtype=np.float64)
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = s[0], s[1], s[2]
    hdr["sform_code"] = 1
    hdr["qform_code"] = 0
    raw = hdr.binaryblock + b"\x00" * 4 + arr.tobytes(order="F")
    path.write_bytes(gzip.compress(raw) if str(path).endswith(".gz") else raw)
    return path


def save_nrrd(path: Path, array, affine=None) -> Path:
    import SimpleITK as sitk

    affine = DEMO_AFFINE if affine is None else np.asarray(affine)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    lps = LPS @ affine
    sp = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(sp.tolist())
    img.SetDirection((lps[:3, :3] / sp).flatten().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    sitk.WriteImage(img, str(path), True)
    return path


def nifti_header_bomb(path: Path, shape, dtype=np.uint8, gz: bool = False, payload: int = 1024) -> Path:
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr.set_sform(DEMO_AFFINE, 1)
    hdr.set_qform(DEMO_AFFINE, 1)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\x00" * 4 + b"\x01" * payload
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def deep_json(depth: int = 200_000) -> str:
    return "[" * depth + "]" * depth


class Payload:
    """Unpickling this runs ``touch <marker>``: a checkpoint must never do that."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


class EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import builtins

        return (builtins.eval, (f"open({self.marker!r}, 'w').close()",))


def write_payload(path: Path, kind: str, m: Path) -> Path:
    """A checkpoint file that creates the file ``m`` when unpickled (:class:`Payload`); ``kind`` picks
    the container: ``zip``, ``zip-state-dict``, ``legacy`` (torch.save), ``raw``, ``raw-eval`` (pickle)."""
    import pickle

    import torch

    if kind == "zip":
        torch.save({"weight": Payload(m)}, str(path))
    elif kind == "zip-state-dict":
        torch.save({"state_dict": {"conv.weight": torch.zeros(2), "evil": EvalPayload(m)}}, str(path))
    elif kind == "legacy":
        torch.save({"weight": Payload(m)}, str(path), _use_new_zipfile_serialization=False)
    elif kind == "raw":
        path.write_bytes(pickle.dumps(Payload(m), protocol=2))
    elif kind == "raw-eval":
        path.write_bytes(pickle.dumps({"x": EvalPayload(m)}, protocol=4))
    else:
        raise ValueError(kind)
    return path


def perturbed_weights(
    src: Path, dst: Path, seed: int = 0, scale: float = 0.05, fill: float | None = None, edit: Callable | None = None
) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in tensors.items():
        if fill is not None:
            out[k] = torch.full_like(v, fill)
        elif v.is_floating_point():
            out[k] = (v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype)).contiguous()
        else:
            out[k] = v
    if edit is not None:
        out = edit(out)
    save_file(out, str(dst))
    return dst


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


SHIPPED_SHA = {
    m: {k: w["sha256"] for k, w in card_of(m)["weights"].items()}
    for m in ("brain-ldm-demo", "labels-demo", "label2image-demo")
}


def sidecar(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def set_field(d: dict, path: str, value) -> dict:
    """Set ``d['a']['b'] = value`` for path 'a.b'; ``value`` DEL removes the key."""
    keys = path.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur[k]
    if value is DEL:
        cur.pop(keys[-1], None)
    else:
        cur[keys[-1]] = value
    return d


DEL = object()


def ae(card, key, value):
    return set_field(card, f"networks.autoencoder.kwargs.{key}", value)


def unet(card, key, value):
    return set_field(card, f"networks.diffusion.kwargs.{key}", value)


def card_folder(base: Path, card: dict | str, copy_weights_from: str | None = "brain-ldm-demo") -> Path:
    """A model folder in ``base`` with ``card`` (JSON data, or text written as is) and, unless
    ``copy_weights_from`` is None, that shipped model's weight files."""
    folder = base / f"folder-{card.get('id', 'x') if isinstance(card, dict) else 'x'}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "card.json").write_text(json.dumps(card) if not isinstance(card, str) else card)
    if copy_weights_from:
        for file in (SHIPPED / copy_weights_from).glob("*.safetensors"):
            shutil.copy(file, folder / file.name)
    return folder


def takeover_card() -> dict:
    """The shipped demo's card with other words and no checksums: a folder that claims its id."""
    card = card_of()
    for weight in card["weights"].values():
        weight.pop("sha256", None)
    card["name"] = "not the shipped one"
    return card


def custom_card(**network_kwargs) -> dict:
    """The shipped demo's card under the id ``custom``, its diffusion UNet's kwargs updated."""
    card = card_of()
    card["id"] = "custom"
    card["networks"]["diffusion"]["kwargs"].update(network_kwargs)
    return card


def files_under(folder: Path) -> set[str]:
    """Every path below ``folder``, relative to it (empty when it does not exist)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()
