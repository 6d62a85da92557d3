"""Lesion insertion on real scans that nobody on this project made (``../shared/realdata``).

* **A real MS patient** (Ljubljana 3D MS database, Lesjak et al., Neuroinformatics 2017,
  doi:10.1007/s12021-017-9348-7, CC-BY; ``ms-patient07``: FLAIR, T1, T2 registered to MNI152, an
  expert consensus lesion mask). The patient's largest real lesion is mirrored across the midline
  into normal-appearing tissue and inserted there, in each sequence; the inserted lesion is compared
  with the patient's own lesion of the same shape and with all the patient's lesions, by measures
  written without looking at the model's output (:func:`lesion_measures`).
* **A real FreeSurfer subject** (niivue demo images; ``norm.mgz`` + ``aparc.a2009s+aseg.mgz``, read
  straight from ``.mgz``): insertion with the subject's own segmentation as the tissue map
  (``tissue_scheme="freesurfer"``); every value of the segmentation must map to a class.

Every section skips with one line when the folder is absent.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import ndimage as ndi

from SynthBrainLib.insertion.freesurfer_labels import FREESURFER_TO_SCHEMA
from SynthBrainLib.outputs.io import read_volume
from SynthBrainLib.outputs.markdown import markdown_table

#: The folder holding the checkout: this file is <there>/<checkout>/devtools/synthbrain_dev/evaluation/real_scans.py.
BESIDE_CHECKOUT = Path(__file__).resolve().parents[4]
#: Where the real scans are: $SYNTHBRAIN_REALDATA, else ../shared/realdata beside the checkout.
REALDATA = Path(os.environ.get("SYNTHBRAIN_REALDATA", BESIDE_CHECKOUT / "shared" / "realdata"))
MS_PATIENT = "ms-patient07"
FREESURFER_SUBJECT = "freesurfer-subject"
SEQUENCES = ("FLAIR", "T2", "T1")
RING_MM = (2.0, 6.0)  # normal-appearing tissue around a lesion, as the issue defines the contrast
MARGIN_MM = 3.0


def spacing_of(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def brain_of(image: np.ndarray) -> np.ndarray:
    """The brain of a skull-stripped scan: above 5 % of its 99th percentile, holes filled."""
    return ndi.binary_fill_holes(image > 0.05 * np.percentile(image[image > 0], 99))


def lesion_measures(
    image: np.ndarray, lesion: np.ndarray, avoid: np.ndarray, affine: np.ndarray, brain: np.ndarray
) -> dict[str, float]:
    """How a lesion looks against the normal-appearing tissue around it.

    * ``contrast``: mean inside the lesion / mean of the brain voxels 2-6 mm from it that lie more than
      2 mm from any lesion in ``avoid``;
    * ``cv``: standard deviation / mean inside the lesion (texture);
    * ``edge``: mean gradient magnitude (per mm) on the voxels within one voxel of the lesion's border,
      over the same ring mean (how sharp the edge is, scale-free).
    """
    spacing = spacing_of(affine)
    lesion = lesion.astype(bool)
    distance = ndi.distance_transform_edt(~lesion, sampling=spacing)
    others = avoid.astype(bool) & ~lesion
    near_others = (
        ndi.distance_transform_edt(~others, sampling=spacing) <= 2.0 if others.any() else np.zeros_like(lesion)
    )
    ring = (distance > RING_MM[0]) & (distance <= RING_MM[1]) & brain & ~near_others
    values = image.astype(np.float64)
    inside, around = values[lesion], values[ring]
    gradient = np.linalg.norm(np.stack(np.gradient(values, *spacing)), axis=0)
    border = ndi.binary_dilation(lesion) & ~ndi.binary_erosion(lesion)
    return {
        "contrast": float(inside.mean() / around.mean()),
        "cv": float(inside.std() / inside.mean()),
        "edge": float(gradient[border].mean() / around.mean()),
        "ring_voxels": int(ring.sum()),
        "lesion_ml": float(lesion.sum() * np.prod(spacing) / 1000.0),
    }


def mirrored(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``mask`` mirrored across the mid-sagittal plane (RAS x -> -x; for scans registered to MNI152)."""
    points = np.argwhere(mask)
    world = np.c_[points, np.ones(len(points))] @ np.asarray(affine).T
    world[:, 0] *= -1.0
    back = np.round(world @ np.linalg.inv(affine).T)[:, :3].astype(int)
    inside = np.all((back >= 0) & (back < np.asarray(mask.shape)), axis=1)
    out = np.zeros(mask.shape, bool)
    out[tuple(back[inside].T)] = True
    return out


def largest_mirrorable_lesion(
    lesions: np.ndarray, affine: np.ndarray, brain: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(the largest real lesion whose mirror image lies in the brain, away from every real lesion, the
    mirror image)."""
    components, count = ndi.label(lesions > 0)
    sizes = ndi.sum(lesions > 0, components, range(1, count + 1))
    near_lesions = ndi.distance_transform_edt(lesions == 0, sampling=spacing_of(affine)) <= RING_MM[1]
    for index in np.argsort(sizes)[::-1]:
        lesion = components == index + 1
        mirror = mirrored(lesion, affine)
        if mirror.sum() >= 0.9 * lesion.sum() and not (mirror & near_lesions).any() and brain[mirror].all():
            return lesion, mirror
    raise ValueError("no real lesion has a mirror image in normal-appearing tissue")


def ms_patient(
    pipe, folder: Path, log: Callable[[str], None], seed: int = 1, sequences: tuple[str, ...] = SEQUENCES
) -> dict[str, Any]:
    """The patient's largest real lesion, mirrored and inserted in each sequence (see the module docstring)."""
    lesions, affine = read_volume(folder / "GOLD_STANDARD_lesion.nii.gz")
    rows = []
    for sequence in sequences:
        scan, scan_affine = read_volume(folder / f"{sequence}.nii.gz")
        brain = brain_of(scan)
        real, target = largest_mirrorable_lesion(lesions, affine, brain)
        start = time.perf_counter()
        result = pipe.insert(scan, scan_affine, {"wmh": target}, sequence=sequence, seed=seed, margin_mm=MARGIN_MM)
        seconds = time.perf_counter() - start
        far = ndi.distance_transform_edt(~target, sampling=spacing_of(affine)) > MARGIN_MM
        all_lesions = lesions > 0
        row = {
            "sequence": sequence,
            "inserted": lesion_measures(result.image, target, all_lesions | target, affine, brain),
            "real_same_lesion": lesion_measures(scan, real, all_lesions, affine, brain),
            "real_all_lesions": lesion_measures(scan, all_lesions, all_lesions, affine, brain),
            "untouched_voxels": int(far.sum()),
            "untouched_voxels_changed": int(np.count_nonzero(result.image[far] != scan[far])),
            "similarity": result.provenance["insertion"]["registration"]["similarity_pearson_r"],
            "intensity_fit_slope": result.provenance["insertion"]["intensity_fit"]["slope"],
            "seconds": round(seconds, 2),
        }
        rows.append(row)
        log(
            f"  {MS_PATIENT} {sequence}: contrast inserted {row['inserted']['contrast']:.3f}, real (same lesion) "
            f"{row['real_same_lesion']['contrast']:.3f}, real (all) {row['real_all_lesions']['contrast']:.3f}; "
            f"{seconds:.1f} s"
        )
    return {"lesion_ml": rows[0]["inserted"]["lesion_ml"], "cases": rows}


def freesurfer_subject(pipe, folder: Path, log: Callable[[str], None], seed: int = 1) -> dict[str, Any]:
    """Insertion into ``norm.mgz`` with the subject's ``aparc.a2009s+aseg.mgz`` as the tissue map."""
    scan, affine = read_volume(folder / "norm.mgz")
    segmentation, seg_affine = read_volume(folder / "aparc.a2009s+aseg.mgz")
    values = [int(v) for v in np.unique(segmentation)]
    white = np.argwhere(ndi.binary_erosion(np.isin(segmentation, (2, 41)), iterations=4))
    centre = white[len(white) // 2]
    ball = np.linalg.norm((np.indices(scan.shape) - centre[:, None, None, None]) * 1.0, axis=0) <= 4.0
    mask = ball & np.isin(segmentation, (2, 41))
    start = time.perf_counter()
    result = pipe.insert(
        scan,
        affine,
        {"wmh": mask},
        sequence="T1",
        tissue=segmentation,
        tissue_affine=seg_affine,
        tissue_scheme="freesurfer",
        seed=seed,
        margin_mm=MARGIN_MM,
    )
    seconds = time.perf_counter() - start
    far = ndi.distance_transform_edt(~mask, sampling=spacing_of(affine)) > MARGIN_MM
    brain = segmentation > 0
    row = {
        "values": len(values),
        "values_unmapped": [v for v in values if v not in FREESURFER_TO_SCHEMA],
        "inserted": lesion_measures(result.image, mask, mask, affine, brain),
        "untouched_voxels_changed": int(np.count_nonzero(result.image[far] != scan[far])),
        "similarity": result.provenance["insertion"]["registration"]["similarity_pearson_r"],
        "seconds": round(seconds, 2),
    }
    log(
        f"  {FREESURFER_SUBJECT}: {row['values']} values, unmapped {row['values_unmapped']}; T1 contrast "
        f"{row['inserted']['contrast']:.3f}, {seconds:.1f} s"
    )
    return row


def real_scans(pipe, log: Callable[[str], None], folder: Path = REALDATA) -> dict[str, Any]:
    """Both real-scan sections, or the one-line reason they were skipped."""
    if not folder.is_dir():
        reason = f"real scans not found at {folder} (../shared/realdata or $SYNTHBRAIN_REALDATA)"
        log(f"  skipped: {reason}")
        return {"skipped": reason}
    return {
        "ms_patient": ms_patient(pipe, folder / MS_PATIENT, log),
        "freesurfer_subject": freesurfer_subject(pipe, folder / FREESURFER_SUBJECT, log),
    }


def render(section: dict[str, Any]) -> list[str]:
    """The report's "Real scans" section (Markdown lines)."""
    lines = ["## Real scans", ""]
    if "skipped" in section:
        return lines + [f"Skipped: {section['skipped']}.", ""]
    ms, fs = section["ms_patient"], section["freesurfer_subject"]
    lines += [
        f"**{MS_PATIENT}** (Ljubljana 3D MS database, Lesjak et al. 2017, CC-BY): the patient's largest real lesion "
        f"({ms['lesion_ml']:.2f} mL) mirrored across the midline into normal-appearing tissue and inserted there. "
        "Contrast = mean in the lesion / mean of normal-appearing tissue 2–6 mm around it (away from other "
        "lesions); CV = sd / mean in the lesion; edge = mean gradient on the lesion border / that ring mean.",
        "",
    ]
    header = ("sequence", "contrast: inserted", "real, same lesion", "real, all lesions", "CV: inserted", "real")
    header += ("edge: inserted", "real", "untouched voxels changed", "similarity", "time")
    rows = []
    for c in ms["cases"]:
        i, same, every = c["inserted"], c["real_same_lesion"], c["real_all_lesions"]
        rows.append(
            (
                c["sequence"],
                f"{i['contrast']:.3f}",
                f"{same['contrast']:.3f}",
                f"{every['contrast']:.3f}",
                f"{i['cv']:.3f}",
                f"{same['cv']:.3f}",
                f"{i['edge']:.4f}",
                f"{same['edge']:.4f}",
                f"{c['untouched_voxels_changed']} of {c['untouched_voxels']:,}",
                f"{c['similarity']:.3f}",
                f"{c['seconds']:.1f} s",
            )
        )
    lines += markdown_table(header, rows)
    lines += [
        "",
        f"**{FREESURFER_SUBJECT}** (niivue demo images; `norm.mgz` with `aparc.a2009s+aseg.mgz` as the tissue map, "
        f"read straight from `.mgz`): {fs['values']} label values, unmapped: {fs['values_unmapped'] or 'none'}; "
        f"a 4 mm WMH inserted in T1: contrast {fs['inserted']['contrast']:.3f}, untouched voxels changed "
        f"{fs['untouched_voxels_changed']}, similarity {fs['similarity']:.3f}, {fs['seconds']:.1f} s.",
        "",
    ]
    return lines
