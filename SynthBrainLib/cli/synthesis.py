"""The verbs that synthesise one result: ``generate`` (a brain from conditions), ``labels`` (a label
map from lesion volumes), ``image-from-labels`` (an image that matches a label map) and
``insert-lesions`` (lesions painted on a patient's scan, synthesised into it) and ``remove-lesions``
(lesions of a patient's scan replaced by synthetic white matter). Each verb's flags are
registered beside its handler; the flags they share are :mod:`.options`, the running
and writing :mod:`.running`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from ..errors import SynthBrainError
from ..models.schema import BRAIN_KIND, IMAGE_KIND, LABELS_KIND, LESION_NAMES, MODALITY_KIND
from .options import add_conditions, add_image_request, add_skull_stripped, add_synthesis
from .running import planned_outputs, run_pipeline, write_outputs

#: ``generate``'s condition flags: (flag, help, type); the flag names the card's variable.
BRAIN_CONDITIONS = (
    ("--age", "age in years (e.g. 45-82 for Brain LDM)", float),
    ("--sex", "female | male", str),
    ("--ventricular-volume", "ventricular CSF volume in mL", float),
    ("--brain-volume", "brain volume (normalised for head size) in mL", float),
)

_LESION_HELP = {
    "wmh": "white-matter hyperintensity volume fraction",
    "tumour": "non-enhancing tumour volume fraction",
    "edema": "edema volume fraction",
    "gdtumour": "gadolinium-enhancing tumour volume fraction",
}
#: ``labels``' condition flags: one volume fraction per lesion class.
LESION_CONDITIONS = tuple((f"--{name}", _LESION_HELP[name], float) for name in LESION_NAMES)


def register(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="generate a brain image: from age, sex and volumes, or of a chosen MR modality and grid",
        description=(
            "Generate a brain image: a T1 brain from age, sex and volumes with a conditional latent diffusion model "
            "(Brain LDM and its demo), or an MR image of a chosen modality, size and spacing (NV-Generate-MR-Brain: "
            "--modality FLAIR --skull-stripped --size 256,256,128 --spacing 0.94,0.94,1.36)."
        ),
    )
    add_conditions(p, BRAIN_CONDITIONS)
    add_image_request(p)
    add_synthesis(p, guidance=True)
    p.set_defaults(handler=generate)

    p = sub.add_parser(
        "labels",
        help="generate a tissue/lesion label map",
        description=(
            "Generate a brainSPADE3D-style label map conditioned on lesion volume fractions (0 = no lesion of "
            "that kind)."
        ),
    )
    add_conditions(p, LESION_CONDITIONS)
    add_synthesis(p, guidance=True)
    p.add_argument(
        "--partial-volumes",
        metavar="OUT",
        default=None,
        help="also write the per-class probability maps (4D) to this file",
    )
    p.set_defaults(handler=labels)

    p = sub.add_parser(
        "insert-lesions",
        help="insert synthetic lesions into a real scan",
        description=(
            "Insert lesions painted on a patient's scan (T1, FLAIR or T2; any grid) into that scan: the model's "
            "template is registered to the scan, the lesions are synthesised in the scan's sequence with a real "
            "lesion's appearance and blended in; every voxel farther than the margin from the mask keeps its value. "
            "Writes the new scan (marked SYNTHETIC) and the lesion mask on the scan's grid."
        ),
    )
    _add_scan_edit(p, "painted on the scan")
    p.add_argument(
        "--existing-lesions",
        default=None,
        metavar="MASK",
        help="a mask of the patient's own lesions (nonzero = lesion, any grid): inserted white-matter lesions take "
        "their contrast, penumbra and texture (default: published values for the sequence)",
    )
    p.add_argument(
        "--lesions-out",
        default=None,
        metavar="FILE",
        help="where to write the lesion mask on the scan grid (default: OUT with '-lesions' before the suffix)",
    )
    add_synthesis(p, sampling=False)
    p.set_defaults(handler=insert_lesions)

    p = sub.add_parser(
        "remove-lesions",
        help="remove lesions from a real scan (lesion filling)",
        description=(
            "Remove the lesions of a mask from a patient's scan (T1, FLAIR or T2; any grid): they are replaced by "
            "synthetic normal-appearing white matter rendered by the model, at the scan's own level and noise around "
            "them; every voxel farther than the margin from the mask keeps its value. Writes the new scan (marked "
            "SYNTHETIC)."
        ),
    )
    _add_scan_edit(p, "to remove, on the scan")
    add_synthesis(p, sampling=False)
    p.set_defaults(handler=remove_lesions)

    p = sub.add_parser(
        "image-from-labels",
        help="synthesise an image that matches a label map",
        description=(
            "Render a label map (NIfTI/NRRD, any grid) as a T1, FLAIR or T2 image; the result lies on the input's grid."
        ),
    )
    p.add_argument("labels", metavar="LABELS", help="label map or partial-volume maps (.nii.gz, .nii, .nrrd)")
    p.add_argument("--sequence", default="T1", help="T1 | FLAIR | T2 (as the model allows; default T1)")
    p.add_argument(
        "--alignment",
        default="world",
        choices=("world", "centre"),
        help="map labels to the model grid by RAS coordinates (world) or by centring them (centre)",
    )
    add_synthesis(p)
    p.set_defaults(handler=image_from_labels)


def _add_scan_edit(p, what: str) -> None:
    """The flags every edit of a patient's scan takes (insert-lesions, remove-lesions)."""
    p.add_argument("scan", metavar="SCAN", help="the patient's scan (.nii.gz, .nii, .nrrd, .mha, .mgz)")
    p.add_argument(
        "--lesions",
        required=True,
        metavar="MASK",
        help=f"lesion label map {what}, with the model's lesion values (brainSPADE: wmh 6, tumour 7, edema 8, "
        "gdtumour 9)",
    )
    p.add_argument("--sequence", required=True, help="the scan's sequence: T1 | FLAIR | T2 (as the model allows)")
    p.add_argument(
        "--tissue",
        default=None,
        metavar="SEG",
        help="the patient's own tissue segmentation (any grid), instead of the registered template's",
    )
    p.add_argument(
        "--tissue-labels",
        default="model",
        choices=("model", "freesurfer"),
        help="values of --tissue: the model's labels, or FreeSurfer aseg / SynthSeg labels (mapped; default model)",
    )
    p.add_argument("--margin", type=float, default=3.0, metavar="MM", help="feathered blend margin in mm (default 3)")
    add_skull_stripped(p)


# ----------------------------------------------------------------------------------------------
# Handlers
# ----------------------------------------------------------------------------------------------
def _conditions(args, flags: Sequence[tuple[str, str, type]]) -> tuple[dict, dict]:
    """The conditions given by ``flags`` (real units) and by ``--raw`` (model units)."""
    names = [flag[2:].replace("-", "_") for flag, _, _ in flags]
    values = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    raw = {}
    for name, value in args.raw:
        if name in raw:
            raise SynthBrainError(f"--raw {name} was given twice")
        raw[name] = value
    return values, raw


def _run_conditioned(args, kind: str, flags: Sequence[tuple[str, str, type]]):
    """A verb whose model generates from conditions alone (``flags``: its condition flags)."""
    values, raw = _conditions(args, flags)
    return run_pipeline(
        args,
        kind,
        lambda p, prog: p.generate(
            seed=args.seed,
            sampler=args.sampler,
            steps=args.steps,
            raw=raw,
            progress=prog,
            preview=args.preview_steps is not None,
            guidance=args.guidance,
            **values,
        ),
        values,
        raw,
    )


def generate(args) -> int:
    planned_outputs(args)
    values, raw = _conditions(args, BRAIN_CONDITIONS)
    image = {
        k: getattr(args, k) for k in ("modality", "skull_stripped", "size", "spacing") if getattr(args, k) is not None
    }
    # Either kind's pipeline takes the keywords the request gave; the card check refuses what its
    # kind does not take (conditions for NV-Generate, a modality for Brain LDM) before torch loads.
    given = dict(values, **image)
    if raw:
        given["raw"] = raw
    _, result = run_pipeline(
        args,
        (BRAIN_KIND, MODALITY_KIND),
        lambda p, prog: p.generate(
            seed=args.seed,
            sampler=args.sampler,
            steps=args.steps,
            progress=prog,
            preview=args.preview_steps is not None,
            guidance=args.guidance,
            **given,
        ),
        values,
        raw,
        image,
    )
    return write_outputs(args, result)


def labels(args) -> int:
    planned_outputs(args, args.partial_volumes)
    _, result = _run_conditioned(args, LABELS_KIND, LESION_CONDITIONS)
    for name, info in result.provenance.get("lesions", {}).items():
        if info["requested"] and not info["present"]:
            print(
                f"synthbrain: note: {name} was requested ({info['requested']:g}) but did not appear; try another seed",
                file=sys.stderr,
            )
        elif not info["requested"] and info["present"]:
            # Why: the label generator can add a lesion kind nobody asked for (a small tumour blob
            # beside large WMH, issue 23); a clinician should hear it rather than find it.
            print(
                f"synthbrain: note: {name} was not requested but appeared ({100 * info['fraction']:.2f} % of the "
                "brain); try another seed",
                file=sys.stderr,
            )
    return write_outputs(args, result, args.partial_volumes)


def image_from_labels(args) -> int:
    from ..outputs.io import read_volume

    planned_outputs(args)
    label_map, affine = read_volume(args.labels)
    _, result = run_pipeline(
        args,
        IMAGE_KIND,
        lambda p, prog: p.generate(
            label_map,
            affine=affine,
            sequence=args.sequence,
            seed=args.seed,
            sampler=args.sampler,
            steps=args.steps,
            alignment=args.alignment,
            progress=prog,
            preview=args.preview_steps is not None,
        ),
    )
    return write_outputs(args, result)


def _lesion_mask_path(args) -> str:
    if args.lesions_out is not None:
        return args.lesions_out
    from ..outputs.io import volume_suffix

    out = str(args.output)
    suffix = volume_suffix(Path(out)) or ""
    return out[: len(out) - len(suffix)] + "-lesions" + suffix


def _scan_edit_inputs(args) -> dict:
    """The scan, its lesions and the optional tissue, read (a bad file is one line, before torch)."""
    from ..outputs.io import read_volume

    scan, affine = read_volume(args.scan)
    lesions, lesions_affine = read_volume(args.lesions)
    tissue, tissue_affine = read_volume(args.tissue) if args.tissue else (None, None)
    return dict(
        scan=scan,
        affine=affine,
        lesions=lesions,
        lesions_affine=lesions_affine,
        sequence=args.sequence,
        tissue=tissue,
        tissue_affine=tissue_affine,
        tissue_scheme=args.tissue_labels,
        margin_mm=args.margin,
        seed=args.seed,
        skull_stripped=args.skull_stripped,
    )


def insert_lesions(args) -> int:
    from ..outputs.io import read_volume

    mask_path = _lesion_mask_path(args)
    planned_outputs(args, labels=mask_path)
    inputs = _scan_edit_inputs(args)
    existing, existing_affine = read_volume(args.existing_lesions) if args.existing_lesions else (None, None)
    _, result = run_pipeline(
        args,
        IMAGE_KIND,
        lambda p, prog: p.insert(**inputs, existing_lesions=existing, existing_affine=existing_affine, progress=prog),
    )
    return write_outputs(args, result, labels=mask_path)


def remove_lesions(args) -> int:
    planned_outputs(args)
    inputs = _scan_edit_inputs(args)
    _, result = run_pipeline(args, IMAGE_KIND, lambda p, prog: p.remove(**inputs, progress=prog))
    return write_outputs(args, result)
