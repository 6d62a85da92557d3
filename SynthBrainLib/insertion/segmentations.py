"""The patient's tissue map from the user's own segmentation, and the painted lesion masks, in the
model's label schema (background, csf, gm, wm, dgm, brainstem, wmh, tumour, edema, gdtumour)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import ConditionError
from ..models.requests import check_lesion_name
from ..models.schema import LESION_NAMES, TISSUE_NAMES
from .freesurfer_labels import FREESURFER_TO_SCHEMA, LUT_SOURCE, freesurfer_lookup

__all__ = ["LESION_NAMES", "TISSUE_SCHEMES", "lesion_labels", "tissue_in_schema"]  # LESION_NAMES: from models.schema

#: How ``tissue`` label values are read: the model's own values, or FreeSurfer aseg / SynthSeg values.
TISSUE_SCHEMES = ("model", "freesurfer")


def tissue_in_schema(tissue: np.ndarray, label_names: tuple[str, ...], scheme: str = "model") -> np.ndarray:
    """The user's segmentation as model label values (uint8, same shape).

    Raises:
        ConditionError: an unknown scheme, a value the scheme does not define, or no tissue at all.
    """
    if scheme not in TISSUE_SCHEMES:
        raise ConditionError(f"tissue scheme {scheme!r} is not one of {', '.join(TISSUE_SCHEMES)}")
    values = np.asarray(tissue)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise ConditionError("tissue segmentation holds non-integer values; give a label map")
    values = values.astype(np.int64)
    present = np.unique(values)
    if scheme == "model":
        unknown = [int(v) for v in present if not 0 <= v < len(label_names)]
        if unknown:
            raise ConditionError(
                f"tissue segmentation has values {_few(unknown)} outside the model's labels 0–{len(label_names) - 1} "
                f"({', '.join(label_names)}); for FreeSurfer or SynthSeg labels use scheme 'freesurfer'"
            )
        out = values.astype(np.uint8)
    else:
        unknown = [int(v) for v in present if int(v) not in FREESURFER_TO_SCHEMA]
        if unknown:
            raise ConditionError(
                f"tissue segmentation has values {_few(unknown)} that no FreeSurfer aseg, aparc+aseg, "
                f"aparc.a2009s+aseg, aparc.DKTatlas+aseg, wmparc or SynthSeg output holds ({LUT_SOURCE}; "
                "the accepted values: docs/freesurfer-labels.md)"
            )
        out = freesurfer_lookup(label_names)[values]
    tissue_ids = [label_names.index(n) for n in TISSUE_NAMES if n in label_names]
    if not np.isin(out, tissue_ids).any():
        raise ConditionError("tissue segmentation has no csf, gm or wm voxel")
    return out


def lesion_labels(
    lesions: np.ndarray | Mapping[str, np.ndarray], label_names: tuple[str, ...], shape: tuple[int, ...]
) -> np.ndarray:
    """Painted lesions as one label map (uint8, model values, 0 = no lesion).

    Args:
        lesions: a label map with the model's lesion values (e.g. 6 = wmh), or masks by lesion name
            (``{"wmh": mask}``; later names win where masks overlap).
        label_names: the model's label names.
        shape: the shape the masks must have.

    Raises:
        ConditionError: an unknown lesion name or value, a tissue value, a wrong shape, or no lesion voxel.
    """
    lesion_values = {label_names.index(n): n for n in LESION_NAMES if n in label_names}
    if isinstance(lesions, Mapping):
        out = np.zeros(shape, np.uint8)
        for name, mask in lesions.items():
            check_lesion_name(name, label_names)
            mask = np.asarray(mask)
            if mask.shape != tuple(shape):
                raise ConditionError(f"lesion mask {name!r} has shape {mask.shape}, the scan {tuple(shape)}")
            out[mask > 0.5] = label_names.index(name)
    else:
        values = np.asarray(lesions)
        if values.shape != tuple(shape):
            raise ConditionError(f"lesion label map has shape {values.shape}, the scan {tuple(shape)}")
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            raise ConditionError("lesion label map holds NaN or infinite values")
        present = [int(v) for v in np.unique(values) if v != 0]
        wrong = [v for v in present if v not in lesion_values]
        if wrong:
            allowed = ", ".join(f"{v} = {n}" for v, n in lesion_values.items())
            raise ConditionError(f"lesion label map has values {_few(wrong)}; lesion values are {allowed} (0 = none)")
        out = values.astype(np.uint8)
    if not out.any():
        raise ConditionError("the lesion mask is empty: paint at least one lesion voxel")
    return out


def _few(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:8])
    return shown + (f" (+{len(values) - 8} more)" if len(values) > 8 else "")
