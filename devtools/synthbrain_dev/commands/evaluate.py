"""``synthbrain-dev evaluate``: measure a model on held-out phantoms and write its report."""

from __future__ import annotations

from SynthBrainLib.cli.options import add_device
from SynthBrainLib.cli.running import log
from SynthBrainLib.errors import SynthBrainError


def register(sub) -> None:
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
    add_device(p)
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
    p.set_defaults(handler=evaluate)


def evaluate(args) -> int:
    from ..evaluation import evaluate_model

    if args.samples < 4:
        raise SynthBrainError(f"--samples {args.samples} is too few; use at least 4")
    evaluate_model(
        args.model,
        args.out,
        samples=args.samples,
        steps=args.steps,
        device=args.device,
        log=log,
        preset="fast" if args.fast else "published",
        guidance=args.guidance,
    )
    return 0
