"""The ``synthbrain`` command line.

Errors a user can cause end the program with one line on stderr (``synthbrain: error: ...``) and
exit status 2, without a traceback; nothing is written when the input is bad.

The command handlers import the library's torch-based modules (pipelines, store, outputs.io, the
developer tools) inside themselves, on purpose: importing torch takes seconds, and ``synthbrain
--help`` or a mistyped argument should answer without it. Only this face does that; inside the
library, modules import each other at the top (Testing/test_layers.py checks the import graph).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .._version import __version__
from ..errors import OutputError, SynthBrainError, SynthesisCancelled
from ..models.samplers import SAMPLERS  # plain Python: the parser lists the samplers
from ..outputs.interrupts import terminate_as_interrupt
from .remedies import describe

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130


# ----------------------------------------------------------------------------------------------
# Shared option groups
# ----------------------------------------------------------------------------------------------
def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    name, value = text.split("=", 1)
    return name.strip().replace("-", "_"), value.strip()


def _add_run_options(p: argparse.ArgumentParser, *, diffusion: bool = True, guidance: bool = False) -> None:
    p.add_argument(
        "--model", required=True, metavar="ID", help="model id (see 'synthbrain models list') or a model folder"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="random seed (default: drawn and recorded in the provenance)",
    )
    if diffusion:
        p.add_argument(
            "--sampler",
            default=None,
            metavar="NAME",
            help=f"{' | '.join(SAMPLERS)}, as the model allows (default: unipc where the card lists it, else "
            "the card's; --published: the card's)",
        )
        p.add_argument(
            "--steps",
            type=int,
            default=None,
            metavar="N",
            help="sampling steps (default: 12 for unipc, else the card's; --published: the card's)",
        )
        if guidance:
            p.add_argument(
                "--guidance",
                type=float,
                default=None,
                metavar="W",
                help="classifier-free guidance scale (default: the card's; 1 = none); only for models "
                "trained with condition dropout, and it doubles each step's work",
            )
    p.add_argument(
        "--device", default="auto", metavar="D", help="auto (CUDA if present) | cpu | cuda | cuda:N (default: auto)"
    )
    _add_speed_options(p)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output file: .nii.gz, .nii or .nrrd (a .json provenance file is written beside it)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--preview", metavar="PNG", default=None, help="also write a PNG of the axial, coronal and sagittal mid-slices"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_speed_options(p: argparse.ArgumentParser, preview: bool = True) -> None:
    p.add_argument(
        "--published",
        dest="preset",
        action="store_const",
        const="published",
        default="fast",
        help="run the card's published sampler and steps in float32 (Brain LDM: the bundle's DDIM 50) instead "
        "of the fast default: UniPC 12 steps, bfloat16 on CPUs with AVX-512 BF16 (as close to the converged "
        "result as DDIM 50; docs/benchmarks.md)",
    )
    p.add_argument(
        "--precision",
        default=None,
        metavar="P",
        help="auto | float32 | mixed | bfloat16 | float16 (auto: bfloat16 on CPUs with AVX-512 BF16 (float32 "
        "with --published or without it), float16 on CUDA; "
        "mixed: bfloat16 except the noisiest denoising steps, "
        "as accurate as float32 in our measurements; bfloat16 and mixed are fast on CPUs with AVX-512 BF16/AMX)",
    )
    p.add_argument(
        "--decode",
        default="auto",
        metavar="MODE",
        help=(
            "auto | full | slab | tiled: slab decoding runs the decoder's high-resolution levels slab by slab "
            "(Brain LDM: 2 GB instead of 5-9 GB, same time); auto: slabs when a full decode would need over "
            "1 GB on the CPU; tiled is the older, slower windowed decode"
        ),
    )
    if not preview:  # a batch is for keeping: no quick-preview option
        return
    p.add_argument(
        "--preview-steps",
        type=int,
        default=None,
        metavar="N",
        help=(
            "quick preview: the preview sampler (dpm++2m where the model allows it) with N steps, unless "
            "--sampler/--steps say otherwise"
        ),
    )


def _add_conditions(p: argparse.ArgumentParser, flags: Sequence[tuple[str, str, Callable]]) -> None:
    for flag, help_text, kind in flags:
        p.add_argument(flag, type=kind, default=None, help=help_text)
    p.add_argument(
        "--raw",
        type=_key_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=(
            "give a condition in the model's own units (usually 0-1) instead of real units, e.g. --raw brain_volume=0.4"
        ),
    )


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the whole usage block by default)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="synthbrain",
        description=(
            "Synthesise brain MRI with published generative models. Every output is marked SYNTHETIC and carries "
            "its provenance."
        ),
    )
    parser.add_argument("--version", action="version", version=f"synthbrain {__version__}")
    parser.add_argument(
        "--home",
        metavar="DIR",
        default=None,
        help="model cache folder (default: $SYNTHBRAIN_HOME or ~/.cache/synthbrain)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "generate",
        help="generate a brain image from age, sex and volumes",
        description="Generate a T1 brain with a conditional latent diffusion model (Brain LDM and its demo).",
    )
    _add_conditions(
        p,
        [
            ("--age", "age in years (e.g. 45-82 for Brain LDM)", float),
            ("--sex", "female | male", str),
            ("--ventricular-volume", "ventricular CSF volume in mL", float),
            ("--brain-volume", "brain volume (normalised for head size) in mL", float),
        ],
    )
    _add_run_options(p, guidance=True)
    p.set_defaults(handler=_cmd_generate)

    p = sub.add_parser(
        "labels",
        help="generate a tissue/lesion label map",
        description=(
            "Generate a brainSPADE3D-style label map conditioned on lesion volume fractions (0 = no lesion of "
            "that kind)."
        ),
    )
    _add_conditions(
        p,
        [
            ("--wmh", "white-matter hyperintensity volume fraction", float),
            ("--tumour", "non-enhancing tumour volume fraction", float),
            ("--edema", "edema volume fraction", float),
            ("--gdtumour", "gadolinium-enhancing tumour volume fraction", float),
        ],
    )
    _add_run_options(p, guidance=True)
    p.add_argument(
        "--partial-volumes",
        metavar="OUT",
        default=None,
        help="also write the per-class probability maps (4D) to this file",
    )
    p.set_defaults(handler=_cmd_labels)

    p = sub.add_parser(
        "insert-lesions",
        help="insert synthetic lesions into a real scan",
        description=(
            "Insert lesions painted on a patient's scan (T1, FLAIR or T2; any grid) into that scan: the model's "
            "template is registered to the scan, the lesions are synthesised in the scan's sequence and blended in; "
            "every voxel farther than the margin from the mask keeps its value. Writes the new scan (marked "
            "SYNTHETIC) and the lesion mask on the scan's grid."
        ),
    )
    p.add_argument("scan", metavar="SCAN", help="the patient's scan (.nii.gz, .nii, .nrrd, .mha)")
    p.add_argument(
        "--lesions",
        required=True,
        metavar="MASK",
        help=(
            "lesion label map painted on the scan, with the model's lesion values "
            "(brainSPADE: wmh 6, tumour 7, edema 8, gdtumour 9)"
        ),
    )
    p.add_argument("--sequence", required=True, help="the scan's sequence: T1 | FLAIR | T2 (as the model allows)")
    p.add_argument(
        "--tissue",
        default=None,
        metavar="SEG",
        help="the patient's own tissue segmentation on the scan's grid, instead of the registered template's",
    )
    p.add_argument(
        "--tissue-labels",
        default="model",
        choices=("model", "freesurfer"),
        help="values of --tissue: the model's labels, or FreeSurfer aseg / SynthSeg labels (mapped; default model)",
    )
    p.add_argument("--margin", type=float, default=3.0, metavar="MM", help="feathered blend margin in mm (default 3)")
    p.add_argument(
        "--lesions-out",
        default=None,
        metavar="FILE",
        help="where to write the lesion mask on the scan grid (default: OUT with '-lesions' before the suffix)",
    )
    _add_run_options(p, diffusion=False)
    p.set_defaults(handler=_cmd_insert_lesions)

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
    _add_run_options(p)
    p.set_defaults(handler=_cmd_image_from_labels)

    p = sub.add_parser(
        "train",
        help="train a demo model on the MNI152 phantom population",
        description=(
            "Train one of the shipped demo models from scratch with a fixed seed (CPU recipe; measured on 2 "
            "cores: 25-80 minutes per network, the latent UNets the longest; see docs/demo-models.md)."
        ),
    )
    p.add_argument("model", choices=("brain-ldm-demo", "labels-demo", "label2image-demo"), help="which demo model")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="model folder to write (card.json, weights, training.json)"
    )
    p.add_argument("--subjects", type=int, default=320, metavar="N", help="phantom subjects to train on (default 320)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="phantom population seed (default 0)")
    p.add_argument(
        "--scale", type=float, default=1.0, metavar="F", help="multiply every step budget (e.g. 0.01 for a smoke run)"
    )
    p.add_argument("--minutes", type=float, default=None, metavar="M", help="wall-clock cap per network")
    p.add_argument(
        "--data", metavar="DIR", default=None, help="phantom dataset cache (default $SYNTHBRAIN_HOME/phantoms)"
    )
    p.add_argument(
        "--autoencoder-from",
        metavar="DIR",
        default=None,
        help="reuse the autoencoder of this model folder (sha256-checked) and train only the diffusion UNet",
    )
    p.add_argument(
        "--sharpen-decoder-of",
        metavar="DIR",
        default=None,
        help="fine-tune only the image decoder of this trained model folder (sha256-checked) with an adversarial "
        "patch loss; encoder and diffusion UNet are kept (brain-ldm-demo)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="measure a model on held-out phantoms and write a report",
        description=(
            "Evaluate a model (controllability, lesions, diversity, FLAIR lesion Dice) on held-out MNI152 "
            "phantoms; writes MODEL.md, MODEL.json and MODEL.png."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="model id or folder")
    p.add_argument("--out", default="docs/evaluation", metavar="DIR", help="report folder (default docs/evaluation)")
    p.add_argument("--samples", type=int, default=32, metavar="N", help="cases to generate (default 32)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="sampling steps (default: the card's)")
    p.add_argument("--device", default="cpu", metavar="D")
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        metavar="W",
        help="classifier-free guidance scale of the main report (default: the card's); models trained for "
        "guidance are also measured at 1, 2, 3 and 5",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="evaluate the library's default setting (fast preset) instead of the card's published sampler in float32",
    )
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser(
        "batch",
        help="make many samples (resumable; shard with torchrun)",
        description=(
            "Generate N images (or label maps) with conditions from a CSV or drawn from ranges; sample i gets a "
            "seed derived from --seed and i. "
            "Finished samples are skipped on a restart; manifest.csv lists every file with its conditions and "
            "provenance. "
            "Shard over processes with: torchrun --nproc-per-node K -m SynthBrainLib.cli batch ... (each rank "
            "makes its share)."
        ),
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="ID",
        help="model id or folder (a conditional_latent_diffusion or label_generator model)",
    )
    p.add_argument(
        "-n",
        "--count",
        type=int,
        default=None,
        metavar="N",
        help="number of samples (default: the rows of --conditions)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (sample_00000.nii.gz, ... with JSON sidecars, batch.json, manifest.csv)",
    )
    p.add_argument(
        "--conditions",
        metavar="CSV",
        default=None,
        help="one row per sample, columns named like the conditions (real units; empty = default)",
    )
    p.add_argument(
        "--range",
        dest="ranges",
        action="append",
        default=[],
        metavar="NAME=LO:HI|NAME=A,B",
        help="draw a condition per sample, e.g. --range age=45:82 --range sex=female,male (repeatable)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="base seed; sample i uses a seed derived from (N, i) (default 0)",
    )
    p.add_argument("--sampler", default=None, metavar="NAME", help="sampler (default: the preset's, as for generate)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="sampling steps (default: the preset's)")
    p.add_argument(
        "--guidance", type=float, default=None, metavar="W", help="classifier-free guidance scale (as for generate)"
    )
    p.add_argument(
        "--device",
        default="auto",
        metavar="D",
        help="auto | cpu | cuda | cuda:N; under torchrun, auto/cuda use cuda:LOCAL_RANK",
    )
    _add_speed_options(p, preview=False)
    p.add_argument("--format", default="nii.gz", metavar="EXT", help="nii.gz | nii | nrrd (default nii.gz)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_batch)

    p = sub.add_parser(
        "bench",
        help="measure speed and memory against the model-zoo reference path",
        description=(
            "Per-step latency, end-to-end time and peak memory of each synthesis path (each in its own process; "
            "warm-up excluded; medians), "
            "and the same for the reference path (the MONAI bundle's plain DDIM 50-step float32 loop with a "
            "full decode), with each path's speed-up and "
            "output difference (PSNR, MS-SSIM, max abs) against it. Models without installed weights are built "
            "from their card with random (perturbed) weights."
        ),
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="model ids or folders, e.g. brain-ldm brain-ldm-demo")
    p.add_argument(
        "--path",
        dest="paths",
        action="append",
        default=[],
        metavar="NAME=SAMPLER:STEPS:PRECISION:DECODE",
        help=(
            "a path to measure (repeatable), e.g. fast=dpm++2m:15:bfloat16:auto, preview=preview, or 'reference' "
            "(default: reference, default, fast, preview)"
        ),
    )
    p.add_argument("--repeats", type=int, default=3, metavar="N", help="timed runs per path (default 3)")
    p.add_argument(
        "--reference-repeats",
        type=int,
        default=1,
        metavar="N",
        help="timed runs of the reference path (default 1: it is the slow one)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="noise seed shared by all paths (default 0)")
    p.add_argument("--device", default="cpu", metavar="D", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="use perturbed random weights even when trained weights are installed",
    )
    p.add_argument(
        "--decode-check",
        action="store_true",
        help="also measure decoding alone: full vs slab in float32 and bfloat16, and MONAI's AutoencoderKlMaisi "
        "(time, peak memory, difference from the full float32 decode)",
    )
    p.add_argument(
        "--quality",
        type=int,
        default=0,
        metavar="N",
        help=(
            "instead of timing: compare samplers/steps/precisions with the 50-step DDIM float32 result on N "
            "seeds x conditions (PSNR, MS-SSIM, measured volumes)"
        ),
    )
    p.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="SAMPLER:STEPS:PRECISION",
        help="with --quality: compare only these (repeatable), besides the reference and the converged result",
    )
    p.add_argument("--json", metavar="FILE", default=None, help="write the full report as JSON")
    p.add_argument("--markdown", metavar="FILE", default=None, help="write the tables as Markdown")
    p.set_defaults(handler=_cmd_bench)

    models = sub.add_parser(
        "models", help="list, import, download, verify models", description="Manage the model cache."
    )
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION", parser_class=_Parser)
    m = msub.add_parser("list", help="show known models, whether their weights are installed, and where")
    m.set_defaults(handler=_cmd_models_list)
    m = msub.add_parser(
        "import",
        help="import a MONAI bundle folder, a model folder or a checkpoint",
        description=(
            "Import weights into the cache (copied once; checksums verified; loaded strictly before anything is "
            "written)."
        ),
    )
    m.add_argument("path", metavar="PATH")
    m.add_argument(
        "--model", metavar="ID", default=None, help="card id (needed for a single checkpoint; recognised for a bundle)"
    )
    m.add_argument(
        "--component",
        metavar="KEY",
        default=None,
        help="which weights a single checkpoint holds, e.g. autoencoder or diffusion",
    )
    m.add_argument(
        "--allow-unverified",
        action="store_true",
        help="accept weights whose checksum differs from the published one (your own weights); recorded in provenance",
    )
    m.set_defaults(handler=_cmd_models_import)
    m = msub.add_parser("download", help="download a model's weights (checksum verified, resumable)")
    m.add_argument("model", metavar="ID")
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(handler=_cmd_models_download)
    m = msub.add_parser("verify", help="re-hash installed weight files")
    m.add_argument("model", metavar="ID", nargs="?", default=None)
    m.set_defaults(handler=_cmd_models_verify)
    m = msub.add_parser("path", help="print the cache folder, or a model's folder")
    m.add_argument("model", metavar="ID", nargs="?", default=None)
    m.set_defaults(handler=_cmd_models_path)
    return parser


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------
class _Progress:
    """tqdm bar driven by the pipelines' ``progress(step, total)`` callback."""

    def __init__(self, enabled: bool, desc: str) -> None:
        self.enabled, self.desc, self.bar = enabled, desc, None

    def __call__(self, step: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="step", file=sys.stderr)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _store(args):
    from ..models.store import ModelStore

    return ModelStore(home=args.home)


def _planned_outputs(args, partial_volumes: str | None = None, labels: str | None = None) -> None:
    from ..outputs.io import ensure_writable, output_paths

    paths = output_paths(args.output, partial_volumes=partial_volumes, labels=labels)
    if args.preview:
        if not args.preview.lower().endswith(".png"):
            raise OutputError(f"preview file {args.preview!r} must end in .png")
        paths.append(Path(args.preview))
    ensure_writable(paths, args.overwrite)


def _check_device_options(args) -> None:
    """Device, precision and decode names, spelt right (torch-free; the machine is checked later)."""
    from ..models.device_names import check_decode_mode, check_precision_name, parse_device_name

    parse_device_name(args.device)
    check_precision_name(args.precision)
    check_decode_mode(args.decode)


def _check_request(args, kind: str, values: dict | None, raw: dict | None) -> None:
    """Every check that needs only the model's card, before torch is imported (seconds): the model
    exists and is complete, of the verb's kind; conditions, sampler, steps, seed and sequence fit it."""
    from ..models.conditioning import MAX_SEED, resolve_conditions, resolve_guidance, resolve_sampler, whole_number

    _check_device_options(args)
    if args.preview_steps is not None and args.preview_steps < 1:
        raise SynthBrainError(f"--preview-steps {args.preview_steps} must be at least 1")
    if args.seed is not None:
        whole_number("seed", args.seed, 0, MAX_SEED)
    card = _store(args).locate(args.model).card
    if card.kind != kind:
        raise SynthBrainError(f"model {card.id} is a {card.kind} model; '{args.command}' needs a {kind} model")
    if values is not None or raw:
        resolve_conditions(card.conditioning, values or {}, raw)
    if card.sampling is not None and (getattr(args, "sampler", None) or getattr(args, "steps", None) is not None):
        resolve_sampler(card.sampling, card.scheduler, args.sampler, args.steps, args.preset)
    resolve_guidance(card.id, card.sampling, getattr(args, "guidance", None))
    sequence = getattr(args, "sequence", None)
    if sequence is not None and card.sequences is not None:
        if sequence.strip().lower() not in [n.lower() for n in card.sequences.names]:
            raise SynthBrainError(f"sequence {sequence!r} is not one of {', '.join(card.sequences.names)}")


def _run(args, kind: str, call: Callable[[Any, _Progress], Any], values: dict | None = None, raw: dict | None = None):
    _check_request(args, kind, values, raw)
    from ..pipelines import load_pipeline  # torch: only once the request is known to be sound

    pipe = load_pipeline(
        args.model,
        device=args.device,
        store=_store(args),
        preset=args.preset,
        precision=args.precision,
        decode=args.decode,
    )
    if pipe.kind != kind:
        raise SynthBrainError(
            f"model {pipe.card.id} is a {pipe.card.kind} model; '{args.command}' needs a {kind} model"
        )
    if args.preview_steps is not None:
        limit = pipe.card.sampling.max_steps if pipe.card.sampling is not None else 1
        if args.preview_steps > limit:
            raise SynthBrainError(
                f"--preview-steps {args.preview_steps} is outside 1–{limit} (the most {pipe.card.id} allows)"
            )
        pipe.preview_steps = args.preview_steps
    progress = _Progress(not args.quiet, pipe.card.id)
    try:
        result = call(pipe, progress)
    finally:
        progress.close()
    return pipe, result


def _finish(args, pipe, result, partial_volumes: str | None = None, labels: str | None = None) -> int:
    from ..outputs.io import output_paths

    existed = {p for p in output_paths(args.output, partial_volumes=partial_volumes, labels=labels) if p.exists()}
    written = result.save(args.output, overwrite=args.overwrite, partial_volumes=partial_volumes, labels=labels)
    if args.preview:
        from ..outputs.preview import montage, preview_zoom, write_png

        volume = result.image if result.image is not None else result.labels
        try:
            written.append(
                write_png(args.preview, montage([volume], zoom=preview_zoom(result.affine)), overwrite=args.overwrite)
            )
        except BaseException:
            for path in written:  # all or nothing, as for the volumes themselves
                if path not in existed:
                    path.unlink(missing_ok=True)
            raise
    for path in written:
        print(path)
    return 0


def _conditions(args, names: Sequence[str]) -> tuple[dict, dict]:
    values = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    raw = {}
    for name, value in args.raw:
        if name in raw:
            raise SynthBrainError(f"--raw {name} was given twice")
        raw[name] = value
    return values, raw


def _run_conditioned(args, kind: str, names: Sequence[str]):
    """A verb whose model generates from conditions alone (``names``: its condition flags)."""
    values, raw = _conditions(args, names)
    return _run(
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


def _cmd_generate(args) -> int:
    _planned_outputs(args)
    pipe, result = _run_conditioned(
        args, "conditional_latent_diffusion", ("age", "sex", "ventricular_volume", "brain_volume")
    )
    return _finish(args, pipe, result)


def _cmd_labels(args) -> int:
    _planned_outputs(args, args.partial_volumes)
    pipe, result = _run_conditioned(args, "label_generator", ("wmh", "tumour", "edema", "gdtumour"))
    for name, info in result.provenance.get("lesions", {}).items():
        if info["requested"] and not info["present"]:
            print(
                f"synthbrain: note: {name} was requested ({info['requested']:g}) but did not appear; try another seed",
                file=sys.stderr,
            )
    return _finish(args, pipe, result, args.partial_volumes)


def _cmd_image_from_labels(args) -> int:
    from ..outputs.io import read_volume

    _planned_outputs(args)
    labels, affine = read_volume(args.labels)
    pipe, result = _run(
        args,
        "label_to_image",
        lambda p, prog: p.generate(
            labels,
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
    return _finish(args, pipe, result)


def _lesion_mask_path(args) -> str:
    if args.lesions_out is not None:
        return args.lesions_out
    from ..outputs.io import volume_suffix

    out = str(args.output)
    suffix = volume_suffix(Path(out)) or ""
    return out[: len(out) - len(suffix)] + "-lesions" + suffix


def _cmd_insert_lesions(args) -> int:
    from ..outputs.io import read_volume

    mask_path = _lesion_mask_path(args)
    _planned_outputs(args, labels=mask_path)
    scan, affine = read_volume(args.scan)
    lesions, lesions_affine = read_volume(args.lesions)
    tissue, tissue_affine = read_volume(args.tissue) if args.tissue else (None, None)
    pipe, result = _run(
        args,
        "label_to_image",
        lambda p, prog: p.insert(
            scan,
            affine,
            lesions,
            lesions_affine=lesions_affine,
            sequence=args.sequence,
            tissue=tissue,
            tissue_affine=tissue_affine,
            tissue_scheme=args.tissue_labels,
            margin_mm=args.margin,
            seed=args.seed,
            progress=prog,
        ),
    )
    return _finish(args, pipe, result, labels=mask_path)


def _cmd_train(args) -> int:
    from ..tools.training import train_demo

    if args.subjects < 8:
        raise SynthBrainError(f"--subjects {args.subjects} is too few; use at least 8")
    if not 0 < args.scale <= 10:
        raise SynthBrainError(f"--scale {args.scale:g} is outside 0–10")
    train_demo(
        args.model,
        args.out,
        subjects=args.subjects,
        seed=args.seed,
        scale=args.scale,
        minutes=args.minutes,
        data_dir=args.data,
        overwrite=args.overwrite,
        autoencoder_from=args.autoencoder_from,
        sharpen_decoder=args.sharpen_decoder_of,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(Path(args.out) / "card.json")
    return 0


def _cmd_evaluate(args) -> int:
    from ..tools.evaluation import evaluate_model

    if args.samples < 4:
        raise SynthBrainError(f"--samples {args.samples} is too few; use at least 4")
    evaluate_model(
        args.model,
        args.out,
        samples=args.samples,
        steps=args.steps,
        device=args.device,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        preset="fast" if args.fast else "published",
        guidance=args.guidance,
    )
    return 0


def _cmd_batch(args) -> int:
    import dataclasses
    import os

    from .. import batch
    from ..models.conditioning import resolve_guidance

    _check_device_options(args)
    rank, world = batch.rank_and_world()
    store = _store(args)
    card = store.locate(args.model, require_complete=False).card
    resolve_guidance(card.id, card.sampling, args.guidance)
    rows = batch.read_conditions_csv(args.conditions) if args.conditions else None
    ranges = [batch.Range.parse(r) for r in args.ranges]
    suffix = batch.suffix_of(args.format)
    plan = batch.plan_batch(  # every argument checked before torch is imported (the last check imports it)
        card,
        args.model,
        count=args.count,
        base_seed=args.seed,
        rows=rows,
        ranges=ranges,
        sampler=args.sampler,
        steps=args.steps,
        suffix=suffix,
    )
    import torch

    from ..pipelines import load_pipeline
    from ..pipelines.device import Precision, resolve_device

    device = args.device
    if world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
    precision = Precision.for_device(resolve_device(device), args.precision, args.preset)
    settings = {"model_id": card.id, "preset": args.preset, "precision": precision.name, "decode": args.decode}
    if args.guidance is not None:
        settings["guidance"] = args.guidance
    plan = dataclasses.replace(plan, settings=settings)
    pipe = load_pipeline(
        args.model, device=device, store=store, preset=args.preset, precision=args.precision, decode=args.decode
    )
    progress = _Progress(not args.quiet, f"{card.id} rank {rank}/{world}" if world > 1 else card.id)
    try:
        report = batch.run_batch(
            pipe,
            plan,
            args.out,
            rank=rank,
            world=world,
            progress=progress,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    finally:
        progress.close()
    if rank == 0:
        print(report["manifest"])
        if report["missing"]:
            raise SynthBrainError(
                f"{len(report['missing'])} of {plan.count} samples are missing (e.g. sample "
                f"{report['missing'][0]}); run the same command again to finish"
            )
    return 0


def _cmd_bench(args) -> int:
    import json

    from ..tools import bench

    for flag, value, lo in (
        ("--repeats", args.repeats, 1),
        ("--reference-repeats", args.reference_repeats, 0),
        ("--quality", args.quality, 0),
    ):
        if value < lo or value > 1000:
            raise SynthBrainError(f"{flag} {value} is outside {lo}–1000")
    from ..pipelines.device import resolve_device

    device = str(resolve_device(args.device))
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.quality:
        from ..tools.sampler_study import format_quality_table, parse_candidate, quality_study

        chosen = [parse_candidate(c) for c in args.candidate] or None
        report = {
            "quality": [
                quality_study(m, samples=args.quality, device=device, candidates=chosen, log=log) for m in args.models
            ]
        }
        text = "\n\n".join(format_quality_table(q) for q in report["quality"])
    else:
        paths = [bench.parse_path(p) for p in args.paths] or None
        if paths is not None and args.reference_repeats == 0:
            paths = [p for p in paths if not p.reference]
        elif paths is None and args.reference_repeats == 0:
            raise SynthBrainError("--reference-repeats 0 needs --path: the default paths include the reference")
        report = bench.bench(
            args.models,
            paths=paths,
            repeats=args.repeats,
            reference_repeats=max(args.reference_repeats, 1),
            seed=args.seed,
            device=device,
            random_weights=args.random_weights,
            log=log,
        )
        text = bench.format_table(report)
        if args.decode_check:
            store = _store(args)
            tileable = [
                m for m in args.models if "autoencoder" in store.locate(m, require_complete=False).card.networks
            ]
            report["decode"] = [
                bench.bench_decode(m, device=device, random_weights=args.random_weights, log=log) for m in tileable
            ]
            text += "\n\n" + "\n\n".join(bench.format_decode_table(d) for d in report["decode"])
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


def _cmd_models_list(args) -> int:
    store = _store(args)
    rows = [("MODEL", "KIND", "STATUS", "SIZE", "WHERE")]
    for model_id, m, problem in store.list():
        if m is None:
            rows.append(
                (model_id, store.card(model_id).kind, "changed since install: run 'synthbrain models verify'", "-", "-")
            )
            continue
        if m.complete:
            status = {"cache": "installed", "shipped": "shipped", "folder": "folder"}[m.location]
        elif m.weights:
            status = f"partial ({len(m.weights)}/{len(m.card.weights)} files)"
        else:
            status = "not installed" if m.card.weights_public else "not installed (weights not public)"
        size = f"{m.size_bytes / 1e6:.1f} MB" if m.weights else "-"
        rows.append((m.card.id, m.card.kind, status, size, str(m.folder) if m.weights else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"cache: {store.models_dir}")
    return 0


def _cmd_models_import(args) -> int:
    from ..pipelines import pipeline_class  # torch: only once a model is imported

    installed = _store(args).import_path(
        args.path,
        model=args.model,
        component=args.component,
        allow_unverified=args.allow_unverified,
        check_card=pipeline_class,
    )
    for key, rec in installed.weights.items():
        print(f"{installed.card.id} {key}: {rec.path} (sha256 {rec.sha256[:12]}..., {rec.checksum})")
    if not installed.complete:
        print(
            f"{installed.card.id} still needs: {', '.join(installed.card.weights[k].file for k in installed.missing)}"
        )
    return 0


def _cmd_models_download(args) -> int:
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(name: str, done: int, total: int | None) -> None:
        if args.quiet:
            return
        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = tqdm(total=total, desc=name, unit="B", unit_scale=True, file=sys.stderr)
        bar.update(done - bar.n)

    try:
        installed = _store(args).download(args.model, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    for key, rec in installed.weights.items():
        print(f"{installed.card.id} {key}: {rec.path} ({rec.checksum})")
    return 0


def _cmd_models_verify(args) -> int:
    rows = _store(args).verify(args.model)
    bad = 0
    for model, file, status in rows:
        print(f"{model}  {file}  {status}")
        bad += not status.startswith("ok")
    if not rows:
        print("no installed weights to verify")
    if bad:
        raise SynthBrainError(f"{bad} file(s) failed verification")
    return 0


def _cmd_models_path(args) -> int:
    store = _store(args)
    print(store.locate(args.model, require_complete=False).folder if args.model else store.models_dir)
    return 0


# ----------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with terminate_as_interrupt():  # kill (SIGTERM) cleans up like Ctrl-C
            return args.handler(args)
    except SynthBrainError as exc:
        print(f"synthbrain: error: {describe(exc)}", file=sys.stderr)
        return EXIT_CANCELLED if isinstance(exc, SynthesisCancelled) else EXIT_USER_ERROR
    except KeyboardInterrupt:
        if args.command == "batch":
            print(
                f"synthbrain: cancelled; finished samples are kept in {args.out}: run the same command again to resume",
                file=sys.stderr,
            )
        else:
            print("synthbrain: cancelled; nothing was written", file=sys.stderr)
        return EXIT_CANCELLED
