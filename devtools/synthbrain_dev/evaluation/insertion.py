"""Evaluate lesion insertion (``LabelToImagePipeline.insert``) and write
``docs/evaluation/lesion-insertion.{md,json}``.

Run: ``python -m synthbrain_dev.evaluation.insertion --out docs/evaluation``

Measured, with estimators written without looking at the model's output:

* **Contrast where painted**: held-out phantoms as patients (another intensity scale, a +-20 %
  bias field, oblique 1 x 1 x 3 mm grids), a white-matter ball painted in; a voxel counts as
  *detected* when it lies in the patient's white matter within 15 mm of the mask and is brighter
  (FLAIR) or darker (T1) than the median of the surrounding normal white matter by 3 robust standard
  deviations (1.4826 x MAD). Dice of detected vs painted; the same rule on the scan before insertion
  gives the false-detection baseline.
* **Untouched voxels**: every voxel farther than the margin from the mask, compared bit for bit.
* **Registration error**: the undeformed phantom template rendered by the phantom renderer (not the
  model) and moved by a known affine onto an oblique grid; error = distance between the estimated and
  the true mapping of the brain's voxels (mm).
* **The MNI152 2009a T1** (nilearn, 1 mm): a white-matter ball inserted, detected as above on the
  template's white-matter map (probability > 0.9).
* **Time** per insertion on this CPU.
* **Real scans** (``../shared/realdata``; skipped with one line where absent): a real MS patient's
  mirrored lesion inserted in FLAIR, T2 and T1 and compared with the patient's own lesions, and a real
  FreeSurfer subject with its own segmentation as the tissue map (:mod:`.real_scans`).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from scipy import ndimage as ndi

from SynthBrainLib._version import __version__
from SynthBrainLib.insertion.registration import resample_between
from SynthBrainLib.outputs.markdown import markdown_table
from SynthBrainLib.outputs.preview import orthogonal_slices, write_png
from SynthBrainLib.pipelines import load_pipeline

from ..phantoms import render_contrast
from . import real_scans
from .insertion_cases import POPULATION, WM, ball, oblique_grid, painted_wmh, patient, rotation, wmh_centre

HELD_OUT = 1000  # phantom indices from here on were never used for training
MARGIN_MM = 3.0
ROI_MM = 15.0


def detected(image: np.ndarray, mask: np.ndarray, wm: np.ndarray, affine: np.ndarray, brighter: bool) -> np.ndarray:
    """White-matter voxels within ROI_MM of the mask that are 3 robust sd beyond normal white matter."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    distance = ndi.distance_transform_edt(~mask, sampling=spacing)
    roi = (distance <= ROI_MM) & (wm | mask)
    reference = roi & wm & (distance > MARGIN_MM + 2.0)
    values = image[reference].astype(np.float64)
    median = np.median(values)
    sd = 1.4826 * np.median(np.abs(values - median))
    return roi & ((image > median + 3 * sd) if brighter else (image < median - 3 * sd))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / total) if total else 1.0


def phantom_cases(pipe, n: int, log: Callable[[str], None]) -> dict[str, Any]:
    rows = []
    for i in range(n):
        index = HELD_OUT + i
        rng = np.random.default_rng(index)
        grid = oblique_grid(angles=tuple(rng.uniform(-15, 15, 3)))
        scale, offset = float(rng.uniform(200, 2000)), float(rng.uniform(0, 50))
        radius = float(rng.uniform(4.0, 7.0))
        _, native_affine, native_labels = patient(index, "T1")
        centre = wmh_centre(native_labels, native_affine, radius, which=i % 5)
        native_mask = ball(native_labels.shape, native_affine, centre, radius) & (native_labels == WM)
        for sequence, brighter in (("FLAIR", True), ("T1", False)):
            scan, affine, labels = patient(index, sequence, grid=grid, scale=scale, offset=offset)
            mask = ball(scan.shape, affine, centre, radius) & (labels == WM)
            # the ceiling: the phantom renderer's own WMH in the same place, same patient transform
            rendered, _, _ = patient(
                index, sequence, grid=grid, scale=scale, offset=offset, painted=((native_mask, "wmh"),)
            )
            start = time.perf_counter()
            result = pipe.insert(scan, affine, {"wmh": mask}, sequence=sequence, seed=index, margin_mm=MARGIN_MM)
            seconds = time.perf_counter() - start
            spacing = np.linalg.norm(affine[:3, :3], axis=0)
            far = ndi.distance_transform_edt(~mask, sampling=spacing) > MARGIN_MM
            wm = labels == WM
            row = {
                "case": index,
                "sequence": sequence,
                "lesion_ml": round(float(mask.sum() * np.prod(spacing) / 1000), 3),
                "dice": dice(detected(result.image, mask, wm, affine, brighter), mask),
                "dice_before_insertion": dice(detected(scan, mask, wm, affine, brighter), mask),
                "dice_ceiling_renderer_wmh": dice(detected(rendered, mask, wm, affine, brighter), mask),
                "untouched_voxels": int(far.sum()),
                "untouched_voxels_changed": int(np.count_nonzero(result.image[far] != scan[far])),
                "similarity": result.provenance["insertion"]["registration"]["similarity_pearson_r"],
                "seconds": round(seconds, 2),
            }
            rows.append(row)
            log(
                f"  phantom {index} {sequence}: Dice {row['dice']:.3f} (renderer's own WMH "
                f"{row['dice_ceiling_renderer_wmh']:.3f}; {row['lesion_ml']} mL), {seconds:.1f} s"
            )
    summary = {}
    for sequence in ("FLAIR", "T1"):
        sub = [r for r in rows if r["sequence"] == sequence]
        dices = [r["dice"] for r in sub]
        summary[sequence] = {
            "dice_mean": float(np.mean(dices)),
            "dice_median": float(np.median(dices)),
            "dice_min": float(np.min(dices)),
            "dice_before_insertion_mean": float(np.mean([r["dice_before_insertion"] for r in sub])),
            "dice_ceiling_mean": float(np.mean([r["dice_ceiling_renderer_wmh"] for r in sub])),
            "similarity_min": float(np.min([r["similarity"] for r in sub])),
            "seconds_median": float(np.median([r["seconds"] for r in sub])),
        }
    summary["untouched_voxels_total"] = int(sum(r["untouched_voxels"] for r in rows))
    summary["untouched_voxels_changed_total"] = int(sum(r["untouched_voxels_changed"] for r in rows))
    return {"cases": rows, "summary": summary}


def registration_error(pipe, n: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The template rendered by the phantom renderer, moved by a known affine: error of the estimate."""
    labels = POPULATION.template_labels()
    errors = []
    for i in range(n):
        rng = np.random.default_rng(500 + i)
        sequence = ("FLAIR", "T1", "T2")[i % 3]
        image = render_contrast(labels, sequence, rng=i) * float(rng.uniform(300, 1500))
        move = np.eye(4)  # template world -> patient world
        move[:3, :3] = rotation(*rng.uniform(-10, 10, 3)) * rng.uniform(0.9, 1.1)
        move[:3, 3] = rng.uniform(-10, 10, 3)
        shape, grid = oblique_grid(angles=tuple(rng.uniform(-15, 15, 3)))
        scan = resample_between(image, move @ POPULATION.affine, shape, grid).astype(np.float32)
        brain = resample_between(labels, move @ POPULATION.affine, shape, grid, linear=False) > 0
        lesion = painted_wmh(np.round(resample_between(labels, move @ POPULATION.affine, shape, grid, linear=False)),
                             grid, radius_mm=5.0)  # fmt: skip
        result = pipe.insert(scan, grid, {"wmh": lesion}, sequence=sequence, seed=i)
        estimate = np.array(result.provenance["insertion"]["registration"]["scan_to_template_ras"])
        truth = np.linalg.inv(move)
        points = np.argwhere(brain)[::50]
        world = np.c_[points, np.ones(len(points))] @ grid.T
        dist = np.linalg.norm((world @ estimate.T - world @ truth.T)[:, :3], axis=1)
        errors.append({"sequence": sequence, "mean_mm": float(dist.mean()), "p95_mm": float(np.percentile(dist, 95))})
        log(f"  known affine {i} ({sequence}): {dist.mean():.2f} mm mean, {np.percentile(dist, 95):.2f} mm p95")
    return {
        "cases": errors,
        "mean_mm": float(np.mean([e["mean_mm"] for e in errors])),
        "p95_mm_max": float(np.max([e["p95_mm"] for e in errors])),
    }


def figure_rows(before: np.ndarray, after: np.ndarray, mask: np.ndarray, zoom: int) -> list[np.ndarray]:
    """Two uint8 rows (before, after): axial, coronal and sagittal slices through the lesion's centre,
    both in the scan's window (1st-99.5th percentile of the brain), pixels enlarged ``zoom`` times."""
    centre = tuple(int(c) for c in np.round(np.argwhere(mask).mean(axis=0)))
    values = before[before > 0]
    lo, hi = np.percentile(values, [1.0, 99.5]) if values.size else (0.0, 1.0)
    rows = []
    for volume in (before, after):
        slices = [np.clip((s - lo) / max(hi - lo, 1e-6), 0, 1) for s in orthogonal_slices(volume, centre)]
        height = max(s.shape[0] for s in slices)
        padded = [np.pad(s, ((0, height - s.shape[0]), (0, 2))) for s in slices]
        row = (np.hstack(padded) * 255).astype(np.uint8)
        rows.append(np.kron(row, np.ones((zoom, zoom), np.uint8)))
    width = max(r.shape[1] for r in rows)
    return [np.pad(r, ((0, 2), (0, width - r.shape[1]))) for r in rows]


def stacked(rows: list[np.ndarray]) -> np.ndarray:
    """Figure rows of different widths one under the other (padded on the right)."""
    width = max(r.shape[1] for r in rows)
    return np.vstack([np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in rows])


def mni152(pipe, log: Callable[[str], None]) -> dict[str, Any]:
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    t1 = np.asarray(t1_img.get_fdata(), np.float32)
    affine = t1_img.affine
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata()) > 0.9
    rows = []
    for which in range(3):
        mask = painted_wmh(np.where(wm, WM, 0), affine, radius_mm=6.0, which=which)
        start = time.perf_counter()
        result = pipe.insert(t1, affine, {"wmh": mask}, sequence="T1", seed=which, margin_mm=MARGIN_MM)
        seconds = time.perf_counter() - start
        far = ndi.distance_transform_edt(~mask) > MARGIN_MM
        rows.append(
            {
                "lesion_ml": round(float(mask.sum()) / 1000, 3),
                "dice": dice(detected(result.image, mask, wm, affine, False), mask),
                "dice_before_insertion": dice(detected(t1, mask, wm, affine, False), mask),
                "untouched_voxels_changed": int(np.count_nonzero(result.image[far] != t1[far])),
                "similarity": result.provenance["insertion"]["registration"]["similarity_pearson_r"],
                "seconds": round(seconds, 2),
            }
        )
        log(f"  MNI152 T1 lesion {which}: Dice {rows[-1]['dice']:.3f}, {seconds:.1f} s")
        if which == 0:
            picture = figure_rows(t1, result.image, mask, zoom=1)
    return {"shape": list(t1.shape), "cases": rows, "figure": picture}


def evaluate(
    out: Path, n: int = 16, n_registration: int = 9, log: Callable[[str], None] = print, real: bool = True
) -> dict[str, Any]:
    """All sections; ``real=False`` leaves out the real scans (a quick run)."""
    pipe = load_pipeline("label2image-demo", device="cpu", preset="published")  # float32, as in the report
    start = time.time()
    log(f"phantom patients ({n}, FLAIR and T1, oblique 1x1x3 mm)")
    phantoms = phantom_cases(pipe, n, log)
    log(f"registration error on {n_registration} known affines")
    reg = registration_error(pipe, n_registration, log)
    log("MNI152 2009a T1")
    mni = mni152(pipe, log)
    log("real scans")
    real_section = real_scans.real_scans(pipe, log) if real else {"skipped": "left out of this run (real=False)"}
    out.mkdir(parents=True, exist_ok=True)
    flair_scan, flair_affine, flair_labels = patient(HELD_OUT, "FLAIR", scale=800.0)
    flair_mask = painted_wmh(flair_labels, flair_affine, radius_mm=6.0)
    flair = pipe.insert(flair_scan, flair_affine, {"wmh": flair_mask}, sequence="FLAIR", seed=1).image
    rows = mni.pop("figure") + figure_rows(flair_scan, flair, flair_mask, zoom=3)
    write_png(out / "lesion-insertion.png", stacked(rows))
    if "ms_patient" in real_section:  # the real patient's FLAIR: a lesion inserted, then all lesions removed
        shown = real_section["ms_patient"].pop("figure")
        real_rows = [row for volumes in shown.values() for row in figure_rows(*volumes, zoom=2)]
        write_png(out / "lesion-insertion-real.png", stacked(real_rows))
    report = {
        "model": pipe.card.id,
        "command": f"python -m synthbrain_dev.evaluation.insertion --out {out} --cases {n}",
        "synthbrain": __version__,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
        "margin_mm": MARGIN_MM,
        "phantoms": phantoms,
        "registration": reg,
        "mni152_t1": mni,
        "real_scans": real_section,
        "seconds": round(time.time() - start, 1),
    }
    (out / "lesion-insertion.json").write_text(json.dumps(report, indent=2))
    (out / "lesion-insertion.md").write_text(render(report))
    return report


def update_real_scans(out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Rerun only the real-scan section of an existing report (``--real-only``): the phantom and MNI152
    sections are kept as they were, and the report says when the real section was rerun."""
    path = out / "lesion-insertion.json"
    report = json.loads(path.read_text())
    pipe = load_pipeline("label2image-demo", device="cpu", preset="published")
    start = time.time()
    section = real_scans.real_scans(pipe, log)
    if "ms_patient" in section:
        shown = section["ms_patient"].pop("figure")
        real_rows = [row for volumes in shown.values() for row in figure_rows(*volumes, zoom=2)]
        write_png(out / "lesion-insertion-real.png", stacked(real_rows))
    report["real_scans"] = section
    report["real_scans_rerun"] = {
        "date": time.strftime("%Y-%m-%d"),
        "synthbrain": __version__,
        "command": f"python -m synthbrain_dev.evaluation.insertion --out {out} --real-only",
        "seconds": round(time.time() - start, 1),
    }
    path.write_text(json.dumps(report, indent=2))
    (out / "lesion-insertion.md").write_text(render(report))
    return report


def render(r: dict[str, Any]) -> str:
    s = r["phantoms"]["summary"]
    reg, mni = r["registration"], r["mni152_t1"]["cases"]
    lines = [
        "# Lesion insertion (`label2image-demo`)",
        "",
        f"Reproduce: `{r['command']}` (SynthBrain {r['synthbrain']}, {r['machine']}, {r['date']}; "
        f"{r['seconds']:.0f} s in all). Margin {r['margin_mm']:g} mm. How each number is measured: the docstring of "
        "`devtools/synthbrain_dev/evaluation/insertion.py`.",
        "",
    ]
    lines += markdown_table(
        ("measure", "FLAIR (hyperintense)", "T1 (hypointense)", "target"),
        [
            (
                "Dice, painted mask vs detected lesion, mean (median, min)",
                *(
                    f"{s[q]['dice_mean']:.3f} ({s[q]['dice_median']:.3f}, {s[q]['dice_min']:.3f})"
                    for q in ("FLAIR", "T1")
                ),
                "≥ 0.6",
            ),
            (
                "ceiling: the same rule on the phantom renderer's own WMH at the same place, mean",
                *(f"{s[q]['dice_ceiling_mean']:.3f}" for q in ("FLAIR", "T1")),
                "—",
            ),
            (
                "the same rule on the scan before insertion",
                *(f"{s[q]['dice_before_insertion_mean']:.3f}" for q in ("FLAIR", "T1")),
                "≈ 0",
            ),
            (
                "registration similarity, lowest",
                *(f"{s[q]['similarity_min']:.3f}" for q in ("FLAIR", "T1")),
                "≥ 0.7 (else refused)",
            ),
            (
                "time per insertion, median (oblique 1x1x3 mm grid)",
                *(f"{s[q]['seconds_median']:.1f} s" for q in ("FLAIR", "T1")),
                "≤ 10 s",
            ),
        ],
    )
    lines += [
        "",
        f"Untouched voxels (farther than the margin from the mask), over all {len(r['phantoms']['cases'])} phantom "
        f"insertions: {s['untouched_voxels_total']:,} voxels, of which **{s['untouched_voxels_changed_total']} "
        "changed**.",
        "",
        f"Registration error with a known affine (rotation ±10°, scale 0.9–1.1, shift ±10 mm, oblique 1x1x3 mm "
        f"grid; {len(reg['cases'])} cases, T1/FLAIR/T2): mean {reg['mean_mm']:.2f} mm, worst 95th percentile "
        f"{reg['p95_mm_max']:.2f} mm (the model grid is 2.5 mm).",
        "",
        "![before and after](lesion-insertion.png)",
        "",
        "Rows: the MNI152 T1 before and after inserting a 6 mm WMH (axial, coronal, sagittal through the "
        "lesion); a held-out phantom FLAIR (2.5 mm, x3) before and after.",
        "",
        "MNI152 2009a T1 (1 mm, nilearn), a 6 mm white-matter ball inserted as WMH:",
        "",
    ]
    lines += markdown_table(
        ("lesion (mL)", "Dice (hypointense)", "before insertion", "similarity", "untouched voxels changed", "time"),
        [
            (
                f"{c['lesion_ml']:.2f}",
                f"{c['dice']:.3f}",
                f"{c['dice_before_insertion']:.3f}",
                f"{c['similarity']:.3f}",
                c["untouched_voxels_changed"],
                f"{c['seconds']:.1f} s",
            )
            for c in mni
        ],
    )
    lines.append("")
    if "real_scans_rerun" in r:
        rerun = r["real_scans_rerun"]
        lines += [
            f"The real-scan section below was rerun on {rerun['date']} (`{rerun['command']}`, "
            f"{rerun['seconds']:.0f} s) after a change to removal; the sections above are unchanged.",
            "",
        ]
    lines += real_scans.render(r["real_scans"])
    lines += [
        "## Clinical scans",
        "",
        "Scans as they leave the scanner (skull, neck, 3-4 mm slices, bias field; a real clinical MS scan and "
        "phantom heads with a known truth), the brain extraction that makes them work and how it was chosen: "
        "[clinical-scans.md](clinical-scans.md), [brain-extraction.md](brain-extraction.md).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/evaluation", type=Path)
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--registration-cases", type=int, default=9)
    parser.add_argument("--real-only", action="store_true", help="rerun only the real-scan section of the report")
    args = parser.parse_args(argv)
    if args.real_only:
        update_real_scans(args.out)
        return 0
    evaluate(args.out, args.cases, args.registration_cases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
