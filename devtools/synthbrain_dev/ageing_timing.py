"""Time ``ConditionalBrainPipeline.age`` for one target age, stage by stage.

Full-size Brain LDM has no installable weights here: ``--random-weights`` builds it from its card with
random (perturbed) weights, whose timings are the real model's. Random weights make no brain that a
real scan would register to, so the scan aged is the model's own brain for the same seed: every
stage then runs at full size (reference brain, registration, encoding, inversion, the two
regenerations with guidance, their decoding, the deformation and the resampling of the scan).

Reproduce (docs/benchmarks.md)::

    python -m synthbrain_dev.ageing_timing brain-ldm --random-weights
    python -m synthbrain_dev.ageing_timing brain-ldm-demo
"""

from __future__ import annotations

import argparse
import json
import time

from .machine import machine
from .random_weights import build_pipeline


def time_ageing(model: str, *, random_weights: bool, device: str = "cpu", years: float = 20.0) -> dict:
    """Seconds of one ageing by ``years`` (from 60), with the progress marks (network evaluations
    done, seconds since the start) that show where the time goes."""
    pipe, weights = build_pipeline(model, device=device, precision="auto", decode="auto", random_weights=random_weights)
    start = time.perf_counter()
    scan = pipe.generate(age=60, sex="female", seed=1)
    made = time.perf_counter() - start
    marks: list[tuple[int, int, float]] = []
    start = time.perf_counter()
    result = pipe.age(
        scan.image, scan.affine, age=60, sex="female", to_age=60 + years, seed=1,
        progress=lambda done, total: marks.append((done, total, round(time.perf_counter() - start, 1))),
    )  # fmt: skip
    return {
        "model": model,
        "weights": weights,
        "grid": list(scan.image.shape),
        "precision": str(pipe.precision.dtype).removeprefix("torch."),
        "scan_made_seconds": round(made, 1),
        "ageing_seconds": round(time.perf_counter() - start, 1),
        "progress_marks": marks,
        "largest_shift_mm": result.provenance["ageing"]["deformation"]["largest_shift_mm"],
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--random-weights", action="store_true", help="the card's networks with random weights")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    print(json.dumps(time_ageing(args.model, random_weights=args.random_weights, device=args.device), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
