"""``synthbrain batch``: many samples of a model that generates from conditions, resumable, sharded
over processes with torchrun (:mod:`SynthBrainLib.batch` does the work)."""

from __future__ import annotations

import dataclasses
import os

from ..errors import SynthBrainError
from ..models.schema import BRAIN_KIND, LABELS_KIND
from .options import add_device, add_fixed_seed, add_model, add_quiet, add_sampling, add_speed
from .running import Progress, log, open_store


def register(sub) -> None:
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
    add_model(p, help=f"model id or folder (a {BRAIN_KIND} or {LABELS_KIND} model)")
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
    # a base seed, not a sample's: a restart must derive the same seeds, so it is not drawn
    add_fixed_seed(p, "base seed; sample i uses a seed derived from (N, i)")
    add_sampling(p, guidance=True)
    add_device(p, note="; under torchrun, auto/cuda use cuda:LOCAL_RANK")
    add_speed(p, preview=False)
    p.add_argument("--format", default="nii.gz", metavar="EXT", help="nii.gz | nii | nrrd (default nii.gz)")
    add_quiet(p)
    p.set_defaults(
        handler=batch,
        cancelled=lambda args: (
            f"cancelled; finished samples are kept in {args.out}: run the same command again to resume"
        ),
    )


def batch(args) -> int:
    from .. import batch as batches
    from ..models.conditioning import resolve_guidance
    from ..models.requests import check_device_options

    check_device_options(args.device, args.precision, args.decode)
    rank, world = batches.rank_and_world()
    store = open_store(args)
    card = store.locate(args.model, require_complete=False).card
    resolve_guidance(card.id, card.sampling, args.guidance)
    rows = batches.read_conditions_csv(args.conditions) if args.conditions else None
    ranges = [batches.Range.parse(r) for r in args.ranges]
    suffix = batches.suffix_of(args.format)
    plan = batches.plan_batch(  # every argument checked before torch is imported (the last check imports it)
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
    progress = Progress(not args.quiet, f"{card.id} rank {rank}/{world}" if world > 1 else card.id)
    try:
        report = batches.run_batch(pipe, plan, args.out, rank=rank, world=world, progress=progress, log=log)
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
