"""Lesion insertion and removal on scans as they leave the scanner (skull, neck, thick slices, bias
field): ``docs/evaluation/clinical-scans.{md,json,png}``.

* **A real clinical MS scan** (``ms-patient12-clinical``: FLAIR 0.72x0.72x3 mm, T1 0.91x0.91x3 mm,
  T2 0.6x0.6x3.3 mm, uint16, with skull and neck; Ljubljana longitudinal MS database, Lesjak et al.,
  Neuroinformatics 2016, doi:10.1007/s12021-016-9301-1, CC-BY). For each sequence: the brain mask
  (volume, time), a 5 mm WMH painted at the deepest white matter of the registered template, inserted
  (registration check, contrast to the tissue around it, the painted footprint in every slice, every
  voxel beyond the margin - skull and neck included - bit-identical, time), then removed again (the
  scan's own voxels are the truth there); the scan given as each other sequence, and a non-brain image,
  must be refused.
* **Phantom heads with a known truth** (:func:`~.insertion_cases.patient_with_head`: held-out phantoms
  on a 0.9x0.9x4 mm oblique grid with a CSF rim, skull, scalp, neck and noise): the brain mask against
  the true brain (Dice), and the same insertion measures.

The brain extractor was chosen by measurement (docs/evaluation/brain-extraction.md).
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
from SynthBrainLib.errors import ConditionError
from SynthBrainLib.extraction.brain_mask import brain_of_scan, brain_only, foreground_ml, has_skull
from SynthBrainLib.insertion import registration
from SynthBrainLib.insertion.appearance import measure, spacing_of
from SynthBrainLib.outputs.io import read_volume
from SynthBrainLib.outputs.markdown import markdown_table
from SynthBrainLib.outputs.preview import orthogonal_slices, write_png
from SynthBrainLib.pipelines import load_pipeline

from .insertion import figure_rows, stacked
from .insertion_cases import WM, patient_with_head
from .real_scans import REALDATA

CLINICAL = "ms-patient12-clinical"
#: (file, the model's sequence)
SCANS = (("FLAIR", "FLAIR"), ("T1W", "T1"), ("T2W", "T2"))
BRIGHTER = {"FLAIR": True, "T2": True, "T1": False}
MARGIN_MM = 3.0
RADIUS_MM = 5.0


def deep_white_matter_ball(pipe, scan, affine, sequence: str, seed: int = 1) -> np.ndarray:
    """A ball of :data:`RADIUS_MM` at the deepest white matter of the model's template registered to the
    scan (as the insertion registers it), clipped to that white matter: where a user would paint a WMH."""
    card = pipe.card
    labels = pipe.tensors[card.template.weights]["labels"].cpu().numpy()
    template = pipe.template_image(sequence, seed)
    view = brain_only(scan, affine, brain_of_scan(scan, affine))
    reg = registration.register(template, card.output.affine, view, affine, labels, seed=seed)
    on_scan = registration.labels_on_scan(labels, card.output.affine, scan.shape, affine, reg.scan_to_template)
    white = on_scan == card.label_names.index("wm")
    spacing = spacing_of(affine)
    depth = ndi.distance_transform_edt(white, sampling=spacing)
    centre = np.array(np.unravel_index(np.argmax(depth), depth.shape))
    offsets = (np.indices(scan.shape).reshape(3, -1).T - centre) * spacing
    return (np.linalg.norm(offsets, axis=1) <= RADIUS_MM).reshape(scan.shape) & white


def in_ras(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """For figures: the volume in its closest RAS voxel order (the clinical scans are stored LPS), each
    thick slice repeated to about the in-plane voxel size (display only: nothing is computed on it)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(volume, nib.orientations.ornt_transform(ornt, [[0, 1], [1, 1], [2, 1]]))
    spacing = spacing_of(affine)[np.argsort(ornt[:, 0])]
    for axis in range(3):
        repeat = int(round(spacing[axis] / spacing.min()))
        if repeat > 1:
            ras = np.repeat(ras, repeat, axis=axis)
    return ras


def mask_row(scan: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One uint8 row: axial, coronal and sagittal slices through the mask's centre, the mask's outline
    drawn in white (RAS-ordered inputs)."""
    centre = tuple(int(c) for c in np.round(np.argwhere(mask).mean(axis=0)))
    lo, hi = np.percentile(scan[mask], [1.0, 99.5])
    outline = mask & ~ndi.binary_erosion(mask, iterations=2)
    slices = []
    for image, edge in zip(orthogonal_slices(scan, centre), orthogonal_slices(outline, centre)):
        shown = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
        shown[edge] = 1.0
        slices.append(shown)
    height = max(s.shape[0] for s in slices)
    row = np.hstack([np.pad(s, ((0, height - s.shape[0]), (0, 2))) for s in slices])
    return np.pad((row * 255).astype(np.uint8), ((0, 2), (0, 0)))


def slices_showing(image, before, lesion, affine, brain, brighter: bool) -> tuple[int, int]:
    """(slices of the scan's thickest axis that hold painted voxels, those where the lesion differs from
    the tissue 2-6 mm around it in the sequence's direction by more than 5 %): the painted footprint
    must show in every slice of a thick-slice scan."""
    axis = int(np.argmax(spacing_of(affine)))
    painted = [k for k in range(lesion.shape[axis]) if np.take(lesion, k, axis=axis).any()]
    showing = 0
    for k in painted:
        only = np.zeros_like(lesion)
        index = [slice(None)] * 3
        index[axis] = k
        only[tuple(index)] = lesion[tuple(index)]
        try:
            contrast = measure(image, only, affine, brain, lesion).contrast
        except ConditionError:
            continue
        showing += contrast > 1.05 if brighter else contrast < 0.95
    return len(painted), int(showing)


def edit_case(pipe, scan, affine, sequence: str, lesion: np.ndarray, seed: int = 1, truth=None) -> dict[str, Any]:
    """Insert a WMH at ``lesion``, then remove it again; the measures of the module docstring (with
    ``truth``, the true brain of a phantom, also the extracted brain's Dice with it)."""
    far = ndi.distance_transform_edt(~lesion, sampling=spacing_of(affine)) > MARGIN_MM
    start = time.perf_counter()
    inserted = pipe.insert(scan, affine, {"wmh": lesion}, sequence=sequence, seed=seed, margin_mm=MARGIN_MM)
    seconds = time.perf_counter() - start
    section = inserted.provenance["insertion"]
    brain = inserted.brain_mask if inserted.brain_mask is not None else scan > np.percentile(scan, 1)
    outside_brain = ~brain
    painted, showing = slices_showing(inserted.image, scan, lesion, affine, brain, BRIGHTER[sequence])
    start = time.perf_counter()
    removed = pipe.remove(inserted.image, affine, {"wmh": lesion}, sequence=sequence, seed=seed, margin_mm=MARGIN_MM)
    removal_seconds = time.perf_counter() - start
    original = scan[lesion].astype(np.float64).mean()
    if truth is not None:
        extracted = inserted.brain_mask
        dice = float(2 * (extracted & truth).sum() / (extracted.sum() + truth.sum()))
    return {
        **({"brain_dice": dice} if truth is not None else {}),
        "lesion_ml": float(lesion.sum() * np.prod(spacing_of(affine)) / 1000.0),
        "brain_extraction": section["brain_extraction"],
        "similarity": section["registration"]["similarity_pearson_r"],
        "sequence_fit": section["registration"]["sequence_fit_pearson_r"],
        "before": measure(scan, lesion, affine, brain, lesion).record(),
        "inserted": measure(inserted.image, lesion, affine, brain, lesion).record(),
        "slices_painted": painted,
        "slices_showing": showing,
        "untouched_voxels": int(far.sum()),
        "untouched_voxels_changed": int(np.count_nonzero(inserted.image[far] != scan[far])),
        "outside_brain_voxels": int(outside_brain.sum()),
        "outside_brain_changed": int(np.count_nonzero((inserted.image != scan) & outside_brain & far)),
        "dtype_kept": str(inserted.image.dtype) == str(scan.dtype),
        "seconds": round(seconds, 2),
        "removed_over_original": float(removed.image[lesion].astype(np.float64).mean() / original),
        "inserted_over_original": float(inserted.image[lesion].astype(np.float64).mean() / original),
        "removal_untouched_changed": int(np.count_nonzero(removed.image[far] != inserted.image[far])),
        "removal_seconds": round(removal_seconds, 2),
        "figure": [in_ras(v, affine) for v in (scan, inserted.image, lesion)],
        "mask_figure": mask_row(in_ras(scan, affine).astype(np.float32), in_ras(brain, affine)),
    }


def refusals(pipe, scan, affine, sequence: str, lesion: np.ndarray) -> dict[str, str]:
    """The scan given as every other sequence of the model: the one-line refusal (or "accepted")."""
    out = {}
    for other in pipe.card.sequences.names:
        if other == sequence:
            continue
        try:
            pipe.insert(scan, affine, {"wmh": lesion}, sequence=other, seed=1)
            out[other] = "accepted"
        except ConditionError as exc:
            out[other] = str(exc)
    return out


def clinical_patient(pipe, folder: Path, log: Callable[[str], None]) -> dict[str, Any]:
    cases, figure, masks = [], [], []
    for name, sequence in SCANS:
        scan, affine = read_volume(folder / f"study1_{name}.nii.gz")
        lesion = deep_white_matter_ball(pipe, scan, affine, sequence)
        case = {
            "scan": name,
            "sequence": sequence,
            "shape": list(scan.shape),
            "spacing_mm": [round(float(s), 3) for s in spacing_of(affine)],
            "dtype": str(scan.dtype),
            "foreground_ml": round(foreground_ml(scan, affine), 1),
            "has_skull": bool(has_skull(scan, affine)),
            **edit_case(pipe, scan, affine, sequence, lesion),
            "refused_as": refusals(pipe, scan, affine, sequence, lesion),
        }
        figure += figure_rows(*case.pop("figure"), zoom=1)
        masks.append(case.pop("mask_figure"))
        cases.append(case)
        log(
            f"  {name}: brain {case['brain_extraction']['brain_volume_ml']:.0f} mL, r {case['similarity']:.3f}, "
            f"contrast {case['inserted']['contrast']:.3f} (before {case['before']['contrast']:.3f}), "
            f"{case['slices_showing']}/{case['slices_painted']} slices, {case['seconds']:.1f} s, "
            f"untouched changed {case['untouched_voxels_changed']}"
        )
    noise = np.random.default_rng(0).normal(300.0, 60.0, scan.shape)
    noise = ndi.gaussian_filter(noise, 3).astype(np.float32)
    try:
        pipe.insert(noise, affine, {"wmh": lesion}, sequence=SCANS[-1][1], seed=1)
        not_a_brain = "accepted"
    except ConditionError as exc:
        not_a_brain = str(exc)
    log(f"  smooth noise on the T2W grid: {not_a_brain}")
    return {"cases": cases, "not_a_brain": not_a_brain, "figure": figure, "mask_figure": masks}


def phantom_heads(pipe, n: int, log: Callable[[str], None]) -> dict[str, Any]:
    rows = []
    for i in range(n):
        index, sequence = 1100 + i, ("FLAIR", "T1", "T2")[i % 3]
        scan, affine, labels = patient_with_head(index, sequence)
        truth = labels > 0
        lesion = deep_white_matter_ball(pipe, scan, affine, sequence) & (labels == WM)
        case = edit_case(pipe, scan, affine, sequence, lesion, truth=truth)
        case.pop("figure")
        case.pop("mask_figure")
        case["true_brain_ml"] = float(truth.sum() * np.prod(spacing_of(affine)) / 1000.0)
        case.update(phantom=index, sequence=sequence)
        rows.append(case)
        log(
            f"  phantom head {index} {sequence}: brain Dice {case['brain_dice']:.3f}, r {case['similarity']:.3f}, "
            f"contrast {case['inserted']['contrast']:.3f}, {case['seconds']:.1f} s"
        )
    return {"cases": rows}


def evaluate(out: Path, n_phantoms: int = 6, log: Callable[[str], None] = print) -> dict[str, Any]:
    pipe = load_pipeline("label2image-demo", device="cpu", preset="published")
    start = time.time()
    folder = REALDATA / CLINICAL
    if folder.is_dir():
        log(CLINICAL)
        clinical = clinical_patient(pipe, folder, log)
    else:
        clinical = {"skipped": f"real scans not found at {folder}"}
    log(f"phantom heads ({n_phantoms})")
    heads = phantom_heads(pipe, n_phantoms, log)
    out.mkdir(parents=True, exist_ok=True)
    if "figure" in clinical:
        write_png(out / "clinical-scans.png", stacked(clinical.pop("figure")))
        write_png(out / "clinical-scans-brain-masks.png", stacked(clinical.pop("mask_figure")))
    report = {
        "model": pipe.card.id,
        "command": f"python -m synthbrain_dev.evaluation.clinical_scans --out {out} --phantoms {n_phantoms}",
        "synthbrain": __version__,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
        "margin_mm": MARGIN_MM,
        "clinical": clinical,
        "phantom_heads": heads,
        "seconds": round(time.time() - start, 1),
    }
    (out / "clinical-scans.json").write_text(json.dumps(report, indent=2))
    (out / "clinical-scans.md").write_text(render(report))
    return report


def _edit_rows(cases, first: Callable[[dict], tuple]) -> list[tuple]:
    rows = []
    for c in cases:
        rows.append(
            (
                *first(c),
                f"{c['similarity']:.3f}",
                f"{c['inserted']['contrast']:.3f} (before {c['before']['contrast']:.3f})",
                f"{c['slices_showing']} of {c['slices_painted']}",
                f"{c['untouched_voxels_changed']} of {c['untouched_voxels']:,}",
                f"{c['outside_brain_changed']} of {c['outside_brain_voxels']:,}",
                f"{c['seconds']:.1f} s",
                f"{c['removed_over_original']:.3f} (inserted {c['inserted_over_original']:.3f})",
                f"{c['removal_untouched_changed']}",
            )
        )
    return rows


EDIT_HEADER = (
    "similarity r",
    "lesion contrast",
    "slices showing it",
    "untouched voxels changed",
    "of them outside the brain",
    "insertion time",
    "removed: lesion mean / original",
    "removal: untouched changed",
)


def render(r: dict[str, Any]) -> str:
    lines = [
        "# Clinical scans: skull, neck, thick slices, bias field (`label2image-demo`)",
        "",
        f"Generated by `{r['command']}` (SynthBrain {r['synthbrain']}, {r['date']}, {r['machine']}, "
        f"{r['seconds']:.0f} s). Margin {r['margin_mm']:g} mm.",
        "",
        "How a scan with its skull is handled (`--skull-stripped auto`, the default): a scan whose filled "
        "foreground (voxels that differ from its most common value) exceeds 2200 mL holds more than a brain; "
        "deepbet 1.0.2 (MIT; weights fetched once from its PyPI wheel, sha256-checked, read without running its "
        "TorchScript code) finds the brain; N4 (SimpleITK, on a 6 mm copy) removes the bias field of a copy that is "
        "0 outside the brain; the model's template is registered to that copy, and the registration's checks run "
        "on it: similarity over the brain, and the sequence (the scan's brain interior must not be explained "
        "better by another sequence's template, by more than 0.1 in r). The output is made from the scan itself: "
        "every voxel beyond the margin, skull and neck included, keeps its value. How the extractor was chosen: "
        "[brain-extraction.md](brain-extraction.md).",
        "",
    ]
    clinical = r["clinical"]
    if "skipped" in clinical:
        lines += [f"{CLINICAL}: skipped ({clinical['skipped']}).", ""]
    else:
        lines += [
            f"## {CLINICAL} (Ljubljana longitudinal MS database, Lesjak et al. 2016, CC-BY)",
            "",
            "![clinical scans: before and after insertion](clinical-scans.png)",
            "",
            "Rows, in pairs: FLAIR, T1, T2 before and after inserting a 5 mm WMH (axial, coronal, sagittal through "
            "the lesion, at the scan's own resolution: 3 mm slices).",
            "",
        ]
        lines += [
            "![brain masks](clinical-scans-brain-masks.png)",
            "",
            "The brain masks (white outline) on FLAIR, T1 and T2, through the mask's centre. Checked by eye: the "
            "outline follows the brain's surface inside the CSF, with the skull, scalp, orbits and neck outside. "
            "The three sequences' masks agree with each other (Dice 0.968-0.980 after a rigid registration; "
            "[brain-extraction.md](brain-extraction.md)).",
            "",
        ]
        lines += markdown_table(
            ("scan", "grid", "foreground", "skull found", "brain mask", "extraction time"),
            [
                (
                    c["scan"],
                    f"{'x'.join(str(s) for s in c['shape'])}, {' x '.join(f'{s:g}' for s in c['spacing_mm'])} mm, "
                    f"{c['dtype']}",
                    f"{c['foreground_ml']:.0f} mL",
                    "yes" if c["has_skull"] else "no",
                    f"{c['brain_extraction'].get('brain_volume_ml', 0):.0f} mL",
                    f"{c['brain_extraction'].get('seconds', 0):.1f} s",
                )
                for c in clinical["cases"]
            ],
        )
        lines += [
            "",
            "A WMH painted at the deepest white matter of the registered template (5 mm ball); contrast = lesion mean "
            "/ mean of the brain 2-6 mm around it. Targets: registration check passed, hyperintense on FLAIR/T2 and "
            "hypointense on T1, every voxel beyond the margin bit-identical (skull included), <= 20 s. Then the "
            "inserted lesion removed again: its mean against the scan's own voxels there before insertion.",
            "",
        ]
        lines += markdown_table(("scan", "lesion") + EDIT_HEADER, _edit_rows(
            clinical["cases"], lambda c: (c["scan"], f"{c['lesion_ml']:.2f} mL")
        ))  # fmt: skip
        lines += ["", "Refusals (one line each; the scan unchanged):", ""]
        rows = [(c["scan"], f"as {k}", v) for c in clinical["cases"] for k, v in c["refused_as"].items()]
        rows.append(("smooth noise", "as T2", clinical["not_a_brain"]))
        lines += markdown_table(("scan", "given", "answer"), rows)
        lines += [
            "",
            "Sequence fit (Pearson r inside the brain, template of each sequence): "
            + "; ".join(
                f"{c['scan']} " + ", ".join(f"{k} {v:.3f}" for k, v in c["sequence_fit"].items())
                for c in clinical["cases"]
            )
            + ".",
            "",
        ]
    heads = r["phantom_heads"]["cases"]
    lines += [
        "## Phantom heads (known truth)",
        "",
        "Held-out phantoms on an oblique 0.9 x 0.9 x 4 mm grid with a CSF rim, skull, scalp, neck and noise "
        "(`insertion_cases.patient_with_head`); the brain mask against the true brain.",
        "",
    ]
    lines += markdown_table(
        ("phantom", "sequence", "brain Dice", "mask / true volume") + EDIT_HEADER,
        _edit_rows(
            heads,
            lambda c: (
                c["phantom"],
                c["sequence"],
                f"{c['brain_dice']:.3f}",
                f"{c['brain_extraction']['brain_volume_ml']:.0f} / {c['true_brain_ml']:.0f} mL",
            ),
        ),
    )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/evaluation", type=Path)
    parser.add_argument("--phantoms", type=int, default=6)
    args = parser.parse_args(argv)
    evaluate(args.out, args.phantoms)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
