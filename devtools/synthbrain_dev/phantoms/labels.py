"""Label schema of the phantoms (the brainSPADE3D schema) and helpers on label maps.

The phantoms use the 10-channel label schema of brainSPADE3D (Fernandez et al.): channel ``c`` of a
partial-volume map holds the fraction (0..1) of the voxel occupied by tissue ``LABEL_NAMES[c]``.
"""

from __future__ import annotations

import numpy as np

from SynthBrainLib.models.schema import LESION_NAMES

#: Channel order of partial volumes and values of label maps (brainSPADE3D schema, indices 0..9).
LABEL_NAMES = (
    "background",
    "csf",
    "gm",
    "wm",
    "dgm",
    "brainstem",
    "wmh",
    "tumour",
    "edema",
    "gdtumour",
)

#: name -> index
LABEL_INDEX = {name: i for i, name in enumerate(LABEL_NAMES)}

BACKGROUND, CSF, GM, WM, DGM, BRAINSTEM, WMH, TUMOUR, EDEMA, GDTUMOUR = range(10)

#: Channels counted as brain tissue (parenchyma, lesions included; CSF and background excluded).
TISSUE_CHANNELS = (GM, WM, DGM, BRAINSTEM, WMH, TUMOUR, EDEMA, GDTUMOUR)

#: Lesion channels, in the brainSPADE3D conditioning order (:data:`~SynthBrainLib.models.schema.LESION_NAMES`).
LESION_CHANNELS = tuple(LABEL_INDEX[name] for name in LESION_NAMES)


def label_index(label) -> int:
    """Index of a label given as an int (0..9) or a name from :data:`LABEL_NAMES`."""
    if isinstance(label, str):
        try:
            return LABEL_INDEX[label]
        except KeyError:
            raise ValueError(f"unknown label {label!r}; expected one of {LABEL_NAMES}") from None
    idx = int(label)
    if not 0 <= idx < len(LABEL_NAMES):
        raise ValueError(f"label index {idx} outside 0..{len(LABEL_NAMES) - 1}")
    return idx


def labels_from_partial_volumes(partial_volumes: np.ndarray) -> np.ndarray:
    """uint8 label map (X, Y, Z) = argmax over the channel axis of (C, X, Y, Z) partial volumes."""
    return np.argmax(partial_volumes, axis=0).astype(np.uint8)


def one_hot(labels: np.ndarray, n_channels: int = len(LABEL_NAMES)) -> np.ndarray:
    """float32 (C, X, Y, Z) one-hot partial volumes from a uint8 label map (X, Y, Z)."""
    labels = np.asarray(labels)
    out = np.zeros((n_channels,) + labels.shape, np.float32)
    for c in range(n_channels):
        out[c] = labels == c
    return out


def paint_lesion(labels_or_pv: np.ndarray, mask: np.ndarray, label, *, tissue_only: bool = True):
    """Return a copy of a label map or partial-volume map with ``mask`` painted as ``label``.

    Args:
        labels_or_pv: uint8 label map (X, Y, Z), or float partial volumes (10, X, Y, Z).
        mask: bool (X, Y, Z), or float (X, Y, Z) in [0, 1] giving the lesion fraction per voxel
            (partial volumes only; a label map uses ``mask > 0.5``).
        label: index or name of the lesion label (e.g. ``"wmh"`` or 6).
        tissue_only: lesions replace brain tissue only (the default): on a label map only voxels
            whose label is a tissue label (gm, wm, dgm, brainstem or a lesion) change; on partial
            volumes the tissue fraction of each voxel (everything but background and CSF) is moved
            into ``label`` in proportion to ``mask``. With ``tissue_only=False`` CSF is replaced too
            (background never is).

    Partial volumes still sum to 1 per voxel after painting.
    """
    idx = label_index(label)
    arr = np.asarray(labels_or_pv)
    if arr.ndim == 3:
        out = arr.copy()
        m = np.asarray(mask) > 0.5 if np.asarray(mask).dtype != bool else np.asarray(mask)
        if m.shape != out.shape:
            raise ValueError(f"mask shape {m.shape} != label map shape {out.shape}")
        replaceable = list(TISSUE_CHANNELS) + ([] if tissue_only else [CSF])
        sel = m & np.isin(out, replaceable)
        out[sel] = idx
        return out
    if arr.ndim != 4:
        raise ValueError("expected a label map (X,Y,Z) or partial volumes (C,X,Y,Z)")
    out = arr.astype(np.float32, copy=True)
    frac = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
    if frac.shape != out.shape[1:]:
        raise ValueError(f"mask shape {frac.shape} != partial-volume grid {out.shape[1:]}")
    sources = [c for c in TISSUE_CHANNELS if c != idx] + ([] if tissue_only else [CSF])
    moved = np.zeros(out.shape[1:], np.float32)
    for c in sources:
        take = out[c] * frac
        out[c] -= take
        moved += take
    out[idx] += moved
    return out
