"""``synthbrain-dev train``: train a demo model from scratch on the MNI152 phantom population."""

from __future__ import annotations

from pathlib import Path

from SynthBrainLib.cli.options import add_fixed_seed
from SynthBrainLib.cli.running import log
from SynthBrainLib.errors import SynthBrainError

from ..training.demo_models import DEMO_IDS


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a demo model on the MNI152 phantom population",
        description=(
            "Train one of the shipped demo models from scratch with a fixed seed (CPU recipe; measured on 2 "
            "cores: 25-80 minutes per network, the latent UNets the longest; see docs/demo-models.md)."
        ),
    )
    p.add_argument("model", choices=DEMO_IDS, help="which demo model")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="model folder to write (card.json, weights, training.json)"
    )
    p.add_argument("--subjects", type=int, default=320, metavar="N", help="phantom subjects to train on (default 320)")
    add_fixed_seed(p, "phantom population seed")
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
        "--diffusion-from",
        metavar="DIR",
        default=None,
        help="continue training the diffusion UNet of this model folder (same architecture, sha256-checked)",
    )
    p.add_argument(
        "--sharpen-decoder-of",
        metavar="DIR",
        default=None,
        help="fine-tune only the image decoder of this trained model folder (sha256-checked) with an adversarial "
        "patch loss; encoder and diffusion UNet are kept (brain-ldm-demo)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.set_defaults(handler=train)


def train(args) -> int:
    from ..training import train_demo

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
        diffusion_from=args.diffusion_from,
        sharpen_decoder=args.sharpen_decoder_of,
        log=log,
    )
    print(Path(args.out) / "card.json")
    return 0
