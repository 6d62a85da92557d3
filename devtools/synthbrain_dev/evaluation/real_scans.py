"""Lesion insertion and removal on real scans that nobody on this project made (``../shared/realdata``).

* **A real MS patient** (Ljubljana 3D MS database, Lesjak et al., Neuroinformatics 2017,
  doi:10.1007/s12021-017-9348-7, CC-BY; ``ms-patient07``: FLAIR, T1, T2 registered to MNI152, an
  expert consensus lesion mask).
  - *Insertion*: the patient's largest real lesion that has a mirror image in normal-appearing tissue
    is mirrored across the midline and inserted there, in each sequence, twice: with the published
    appearance (the default; the patient is not among its sources) and matched to the patient's
    OTHER lesions (leave-one-out: the compared lesion is not in the reference). Contrast, penumbra
    and CV are :func:`SynthBrainLib.insertion.appearance.measure`; the edge (mean gradient on the
    border) is not a target of the insertion, so it checks it independently.
  - *Removal*: all the patient's lesions removed; the filled voxels against normal-appearing white
    matter fixed in advance and independent of the method (the white-matter class of a 3-class
    k-means of the patient's T1 in the brain, eroded by one voxel, more than 3 mm from any lesion):
    mean ratio and Kolmogorov-Smirnov distance; and how much of the removed volume a detector still
    finds - a threshold on the scan, tuned on the patient's real lesions before removal (best Dice
    over NAWM and lesions), then fixed.
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
from scipy import stats

from SynthBrainLib.insertion.appearance import measure, spacing_of
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
MARGIN_MM = 3.0
#: ms-patient07's lesions are hyperintense on FLAIR and T2, hypointense on T1.
BRIGHTER = {"FLAIR": True, "T2": True, "T1": False}


def brain_of(image: np.ndarray) -> np.ndarray:
    """The brain of a skull-stripped scan: above 5 % of its 99th percentile, holes filled."""
    return ndi.binary_fill_holes(image > 0.05 * np.percentile(image[image > 0], 99))


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
    near_lesions = ndi.distance_transform_edt(lesions == 0, sampling=spacing_of(affine)) <= 6.0
    for index in np.argsort(sizes)[::-1]:
        lesion = components == index + 1
        mirror = mirrored(lesion, affine)
        if mirror.sum() >= 0.9 * lesion.sum() and not (mirror & near_lesions).any() and brain[mirror].all():
            return lesion, mirror
    raise ValueError("no real lesion has a mirror image in normal-appearing tissue")


def white_matter(t1: np.ndarray, brain: np.ndarray, lesions: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Normal-appearing white matter, independent of any SynthBrain method: the brightest class of a
    3-class k-means of the T1 in the brain, eroded by a voxel, more than 3 mm from any lesion."""
    values = t1[brain].astype(np.float64)
    centres = np.percentile(values, [20, 50, 85])
    for _ in range(50):
        nearest = np.abs(values[:, None] - centres[None]).argmin(axis=1)
        centres = np.array([values[nearest == k].mean() for k in range(3)])
    classes = np.zeros(t1.shape, np.int8)
    classes[brain] = np.abs(values[:, None] - centres[None]).argmin(axis=1)
    wm = ndi.binary_erosion(classes == int(np.argmax(centres)))
    return wm & (ndi.distance_transform_edt(~lesions, sampling=spacing_of(affine)) > 3.0)


def detector(image: np.ndarray, lesions: np.ndarray, nawm: np.ndarray, brighter: bool) -> float:
    """The threshold that best separates the patient's real lesions from NAWM (Dice), fixed afterwards."""
    region = lesions | nawm
    best, threshold = -1.0, 0.0
    for t in np.percentile(image[region], np.arange(50.0, 99.9, 0.25) if brighter else np.arange(0.1, 50.0, 0.25)):
        found = region & ((image > t) if brighter else (image < t))
        score = 2.0 * (found & lesions).sum() / (found.sum() + lesions.sum())
        if score > best:
            best, threshold = score, float(t)
    return threshold


def ms_patient(
    pipe, folder: Path, log: Callable[[str], None], seed: int = 1, sequences: tuple[str, ...] = SEQUENCES
) -> dict[str, Any]:
    """Insertion (published and patient-matched) and removal on the real MS patient (module docstring)."""
    lesions, affine = read_volume(folder / "GOLD_STANDARD_lesion.nii.gz")
    lesions = lesions > 0
    t1, _ = read_volume(folder / "T1.nii.gz")
    rows, figure = [], {}
    for sequence in sequences:
        scan, scan_affine = read_volume(folder / f"{sequence}.nii.gz")
        brain = brain_of(scan)
        real, target = largest_mirrorable_lesion(lesions, affine, brain)
        far = ndi.distance_transform_edt(~target, sampling=spacing_of(affine)) > MARGIN_MM
        row = {"sequence": sequence, "real_same_lesion": measure(scan, real, affine, brain, lesions).record()}
        row["real_all_lesions"] = measure(scan, lesions, affine, brain, lesions).record()
        for mode, existing in (("published", None), ("patient", lesions & ~real)):
            start = time.perf_counter()
            result = pipe.insert(
                scan, scan_affine, {"wmh": target}, sequence=sequence, seed=seed, margin_mm=MARGIN_MM,
                existing_lesions=existing,
            )  # fmt: skip
            row[mode] = {
                **measure(result.image, target, affine, brain, lesions | target).record(),
                "untouched_voxels_changed": int(np.count_nonzero(result.image[far] != scan[far])),
                "untouched_voxels": int(far.sum()),
                "similarity": result.provenance["insertion"]["registration"]["similarity_pearson_r"],
                "seconds": round(time.perf_counter() - start, 2),
            }
            if sequence == "FLAIR" and mode == "published":
                figure["inserted"] = (scan, result.image, target)
        row["removal"] = removal(pipe, scan, scan_affine, lesions, t1, brain, affine, sequence, seed)
        if sequence == "FLAIR":
            figure["removed"] = (scan, row["removal"].pop("image"), lesions)
        else:
            row["removal"].pop("image")
        rows.append(row)
        p, r, same = row["published"], row["removal"], row["real_same_lesion"]
        log(
            f"  {MS_PATIENT} {sequence}: inserted contrast {p['contrast']:.3f} (real {same['contrast']:.3f}), "
            f"removed lesions at {r['filled_over_nawm']:.3f} of NAWM, detector finds {r['detected_fraction']:.1%}"
        )
    return {"lesion_ml": rows[0]["published"]["lesion_ml"], "cases": rows, "figure": figure}


def removal(pipe, scan, scan_affine, lesions, t1, brain, affine, sequence, seed) -> dict[str, Any]:
    """All the patient's lesions removed (module docstring for the measures)."""
    nawm = white_matter(t1, brain, lesions, affine)
    brighter = BRIGHTER[sequence]
    threshold = detector(scan, lesions, nawm, brighter)
    start = time.perf_counter()
    result = pipe.remove(scan, scan_affine, {"wmh": lesions}, sequence=sequence, seed=seed, margin_mm=MARGIN_MM)
    seconds = time.perf_counter() - start
    far = ndi.distance_transform_edt(~lesions, sampling=spacing_of(affine)) > MARGIN_MM
    filled, before, reference = result.image[lesions], scan[lesions], scan[nawm]

    def found(values):
        return float(np.mean(values > threshold) if brighter else np.mean(values < threshold))

    return {
        "filled_over_nawm": float(filled.mean() / reference.mean()),
        "lesions_over_nawm_before": float(before.mean() / reference.mean()),
        "ks_filled_vs_nawm": float(stats.ks_2samp(filled, reference).statistic),
        "ks_lesions_vs_nawm_before": float(stats.ks_2samp(before, reference).statistic),
        "detector_threshold": threshold,
        "detected_fraction_before": found(before),
        "detected_fraction": found(filled),
        "nawm_false_positive_fraction": found(reference),
        "untouched_voxels_changed": int(np.count_nonzero(result.image[far] != scan[far])),
        "untouched_voxels": int(far.sum()),
        "lesion_ml": float(lesions.sum() * np.prod(spacing_of(affine)) / 1000.0),
        "seconds": round(seconds, 2),
        "image": result.image,
    }


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
        "inserted": measure(result.image, mask, affine, brain, mask).record(),
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
        f"**{MS_PATIENT}** (Ljubljana 3D MS database, Lesjak et al. 2017, CC-BY). *Insertion*: the patient's largest "
        f"mirrorable real lesion ({ms['lesion_ml']:.2f} mL) mirrored across the midline into normal-appearing tissue "
        "and inserted there with the published appearance (default) and matched to the patient's other lesions. "
        "Contrast = mean in the lesion / mean of normal-appearing tissue 2–6 mm around it (away from other "
        "lesions); CV = sd / mean in the lesion; edge = mean gradient on the lesion border / that ring mean (not a "
        "target of the insertion). Targets on FLAIR: contrast within 15 % of the real lesion's, CV and edge within "
        "30 %.",
        "",
        "![ms-patient07 FLAIR: a lesion inserted, all lesions removed](lesion-insertion-real.png)",
        "",
        "Rows: the FLAIR and the mirrored lesion inserted (slices through it); the FLAIR and all its lesions "
        "removed (slices through their centre).",
        "",
    ]
    header = ("sequence", "lesion", "contrast", "CV", "edge", "penumbra", "untouched voxels changed", "time")
    rows = []
    for c in ms["cases"]:
        same = c["real_same_lesion"]
        for label, m in (
            ("real, same lesion", same),
            ("real, all lesions", c["real_all_lesions"]),
            ("inserted, published", c["published"]),
            ("inserted, patient-matched", c["patient"]),
        ):

            def rel(key, m=m):
                return "" if m is same else f" ({m[key] / same[key] - 1:+.0%})"

            changed = f"{m['untouched_voxels_changed']} of {m['untouched_voxels']:,}" if "seconds" in m else ""
            rows.append(
                (
                    c["sequence"], label, f"{m['contrast']:.3f}{rel('contrast')}", f"{m['cv']:.3f}{rel('cv')}",
                    f"{m['edge']:.3f}{rel('edge')}", f"{m['penumbra']:.2f}", changed,
                    f"{m['seconds']:.1f} s" if "seconds" in m else "",
                )
            )  # fmt: skip
    lines += markdown_table(header, rows)
    lines += [
        "",
        f"*Removal*: all {ms['cases'][0]['removal']['lesion_ml']:.2f} mL of the patient's lesions removed. NAWM: the "
        "white-matter class of a 3-class k-means of the patient's T1 in the brain (eroded by a voxel, > 3 mm from any "
        "lesion), fixed before removal. The detector: a threshold tuned on the patient's real lesions before removal "
        "(best Dice over NAWM and lesions), then fixed. Targets: filled mean within 5 % of NAWM, the detector finds "
        "< 10 % of the removed volume, every voxel beyond the margin bit-identical.",
        "",
    ]
    header = ("sequence", "filled / NAWM mean", "before", "KS distance filled vs NAWM", "before", "detector finds",
              "before", "NAWM voxels it flags", "untouched voxels changed", "time")  # fmt: skip
    rows = []
    for c in ms["cases"]:
        r = c["removal"]
        rows.append(
            (
                c["sequence"], f"{r['filled_over_nawm']:.3f}", f"{r['lesions_over_nawm_before']:.3f}",
                f"{r['ks_filled_vs_nawm']:.3f}", f"{r['ks_lesions_vs_nawm_before']:.3f}",
                f"{r['detected_fraction']:.1%}", f"{r['detected_fraction_before']:.1%}",
                f"{r['nawm_false_positive_fraction']:.1%}",
                f"{r['untouched_voxels_changed']} of {r['untouched_voxels']:,}",
                f"{r['seconds']:.1f} s",
            )
        )  # fmt: skip
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
