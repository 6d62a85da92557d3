"""The flags several verbs share, each defined once with one default: a verb adds the ones it takes.

Plain Python (the sampler registry is plain Python too): ``--help`` and argument errors need no torch.
"""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

from ..models.requests import SKULL_STRIPPED_CHOICES
from ..models.samplers import SAMPLERS

MODEL_HELP = "model id (see 'synthbrain models list') or a model folder"


def key_value(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` as (name with ``-`` read as ``_``, value)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    name, value = text.split("=", 1)
    return name.strip().replace("-", "_"), value.strip()


def add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        metavar="DIR",
        default=None,
        help="model cache folder (default: $SYNTHBRAIN_HOME or ~/.cache/synthbrain)",
    )


def add_model(p: argparse.ArgumentParser, help: str = MODEL_HELP) -> None:
    p.add_argument("--model", required=True, metavar="ID", help=help)


def add_seed(p: argparse.ArgumentParser) -> None:
    """``--seed``: the seed of the sample a verb makes; drawn (and recorded in the provenance) when not given."""
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="random seed (default: drawn and recorded in the provenance)",
    )


def add_fixed_seed(p: argparse.ArgumentParser, what: str) -> None:
    """``--seed`` where it is not one sample's seed but seeds ``what`` (a batch's derived seeds, a
    benchmark's shared noise, a phantom population): fixed, 0, so that a rerun makes the same."""
    p.add_argument("--seed", type=int, default=0, metavar="N", help=f"{what} (default 0)")


def add_device(p: argparse.ArgumentParser, note: str = "") -> None:
    p.add_argument(
        "--device",
        default="auto",
        metavar="D",
        help=f"auto (CUDA if present) | cpu | cuda | cuda:N (default: auto){note}",
    )


def add_sampling(p: argparse.ArgumentParser, *, guidance: bool) -> None:
    """``--sampler`` and ``--steps`` (and ``--guidance``, for the runs that take a guidance scale)."""
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


def add_speed(p: argparse.ArgumentParser, preview: bool = True) -> None:
    """``--published``, ``--precision``, ``--decode`` and (``preview``) ``--preview-steps``."""
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
            "auto | full | slab | tiled | windows: slab decoding runs the decoder's high-resolution levels slab by "
            "slab (Brain LDM: 2 GB instead of 5-9 GB, same time); auto: slabs when a full decode would need over "
            "1 GB on the CPU; tiled is the older, slower windowed decode; windows: MAISI's overlapping latent "
            "windows, for decoders that cannot run in slabs (NV-Generate; auto above 6 GB on the CPU)"
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


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_output(p: argparse.ArgumentParser) -> None:
    """``-o/--output``, ``--overwrite``, ``--preview PNG`` and ``--quiet`` of a verb that writes one result."""
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
    add_quiet(p)


def add_synthesis(p: argparse.ArgumentParser, *, sampling: bool = True, guidance: bool = False) -> None:
    """Every flag of a verb that synthesises one result: model, seed, (sampler, steps, guidance),
    device, speed, output."""
    add_model(p)
    add_seed(p)
    if sampling:
        add_sampling(p, guidance=guidance)
    add_device(p)
    add_speed(p)
    add_output(p)


def add_conditions(p: argparse.ArgumentParser, flags: Sequence[tuple[str, str, Callable]]) -> None:
    """One flag per condition (``flags``: (flag, help, type)) and ``--raw NAME=VALUE``."""
    for flag, help_text, kind in flags:
        p.add_argument(flag, type=kind, default=None, help=help_text)
    p.add_argument(
        "--raw",
        type=key_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=(
            "give a condition in the model's own units (usually 0-1) instead of real units, e.g. --raw brain_volume=0.4"
        ),
    )


def add_skull_stripped(p) -> None:
    """``--skull-stripped auto|yes|no`` (scan edits and ageing)."""
    p.add_argument(
        "--skull-stripped",
        default="auto",
        choices=SKULL_STRIPPED_CHOICES,
        help="is the scan brain only? auto (default) detects skull and neck and extracts the brain (deepbet) "
        "for registration only: skull and neck keep their values",
    )


def add_image_request(p) -> None:
    """``--modality``, ``--skull-stripped`` / ``--whole-head``, ``--size`` and ``--spacing``: the image
    a model of a chosen modality and grid makes (NV-Generate-MR-Brain); checked against its card."""
    p.add_argument(
        "--modality", default=None, metavar="NAME", help="T1w | T2w | FLAIR | SWI | MRA, as the model lists them"
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--skull-stripped", dest="skull_stripped", action="store_const", const=True, default=None, help="brain only"
    )
    group.add_argument(
        "--whole-head", dest="skull_stripped", action="store_const", const=False, help="the whole head (default)"
    )
    p.add_argument("--size", default=None, metavar="X,Y,Z", help="output voxels, multiples of 32 (default 256,256,128)")
    p.add_argument("--spacing", default=None, metavar="X,Y,Z", help="voxel size in mm, 0.4-5 (default 0.94,0.94,1.36)")
