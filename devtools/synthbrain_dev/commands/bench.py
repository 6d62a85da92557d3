"""``synthbrain-dev bench``: speed and memory of the synthesis paths against the model-zoo reference
path (:mod:`synthbrain_dev.bench`), or with ``--quality`` the sampler quality study
(:mod:`synthbrain_dev.sampler_study`)."""

from __future__ import annotations

import json
from pathlib import Path

from SynthBrainLib.cli.options import add_device, add_fixed_seed
from SynthBrainLib.cli.running import log, open_store
from SynthBrainLib.errors import SynthBrainError


def register(sub) -> None:
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
    add_fixed_seed(p, "noise seed shared by all paths")
    add_device(p)
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
    p.set_defaults(handler=bench)


def bench(args) -> int:
    for flag, value, lo in (
        ("--repeats", args.repeats, 1),
        ("--reference-repeats", args.reference_repeats, 0),
        ("--quality", args.quality, 0),
    ):
        if value < lo or value > 1000:
            raise SynthBrainError(f"{flag} {value} is outside {lo}–1000")
    from SynthBrainLib.pipelines.device import resolve_device

    from .. import bench as benchmarks

    device = str(resolve_device(args.device))
    if args.quality:
        report, text = _quality(args, device)
    else:
        report, text = _timing(args, device, benchmarks)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


def _quality(args, device: str) -> tuple[dict, str]:
    from ..sampler_study import format_quality_table, parse_candidate, quality_study

    chosen = [parse_candidate(c) for c in args.candidate] or None
    report = {
        "quality": [
            quality_study(m, samples=args.quality, device=device, candidates=chosen, log=log) for m in args.models
        ]
    }
    return report, "\n\n".join(format_quality_table(q) for q in report["quality"])


def _timing(args, device: str, benchmarks) -> tuple[dict, str]:
    paths = [benchmarks.parse_path(p) for p in args.paths] or None
    if paths is not None and args.reference_repeats == 0:
        paths = [p for p in paths if not p.reference]
    elif paths is None and args.reference_repeats == 0:
        raise SynthBrainError("--reference-repeats 0 needs --path: the default paths include the reference")
    report = benchmarks.bench(
        args.models,
        paths=paths,
        repeats=args.repeats,
        reference_repeats=max(args.reference_repeats, 1),
        seed=args.seed,
        device=device,
        random_weights=args.random_weights,
        log=log,
    )
    text = benchmarks.format_table(report)
    if args.decode_check:
        store = open_store(args)
        tileable = [m for m in args.models if "autoencoder" in store.locate(m, require_complete=False).card.networks]
        report["decode"] = [
            benchmarks.bench_decode(m, device=device, random_weights=args.random_weights, log=log) for m in tileable
        ]
        text += "\n\n" + "\n\n".join(benchmarks.format_decode_table(d) for d in report["decode"])
    return report, text
