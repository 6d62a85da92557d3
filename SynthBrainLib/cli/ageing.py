"""``synthbrain age``: a patient's own T1 at another age (one target, or a sweep), with the atrophy
map (log-Jacobian) of the deformation."""

from __future__ import annotations

from pathlib import Path

from ..errors import OutputError, SynthBrainError
from ..models.schema import BRAIN_KIND
from .options import add_skull_stripped, add_synthesis
from .running import check_args, planned_outputs, run_pipeline, write_outputs

#: Most target ages one sweep may ask for.
MAX_SWEEP = 50


def register(sub) -> None:
    p = sub.add_parser(
        "age",
        help='age a patient\'s own scan ("this brain at 80")',
        description=(
            "Make a patient's T1 older or younger: the model's brain is registered to the scan, the "
            "scan is inverted under its own conditions and regenerated at the target age, and the difference becomes a "
            "smooth deformation of the patient's own scan (identity, detail and contrast stay the patient's). Writes "
            "the aged scan (marked SYNTHETIC) and, with --jacobian, the deformation's log-Jacobian (atrophy map)."
        ),
    )
    p.add_argument(
        "scan", metavar="SCAN", help="the patient's T1, skull-stripped or whole-head (.nii.gz, .nii, .nrrd, .mha, .mgz)"
    )
    p.add_argument("--age", type=float, required=True, metavar="YEARS", help="the patient's age at the scan")
    p.add_argument("--sex", default=None, help="female | male (default: the model's)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", dest="to_age", type=float, metavar="YEARS", help="the target age")
    target.add_argument(
        "--sweep",
        metavar="FROM:TO:N",
        help=f"N target ages from FROM to TO (N <= {MAX_SWEEP}); OUT gets '-AGE' before its suffix for each",
    )
    p.add_argument("--ventricular-volume", type=float, default=None, metavar="ML", help="default: measured on the scan")
    p.add_argument("--brain-volume", type=float, default=None, metavar="ML", help="default: measured on the scan")
    p.add_argument(
        "--steps", type=int, default=None, metavar="N", help="DDIM steps of the inversion and regeneration (default 25)"
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        metavar="W",
        help="how many times the model's change between the two ages is followed (default 6)",
    )
    p.add_argument(
        "--jacobian", default=None, metavar="FILE", help="also write the log-Jacobian (atrophy map) on the scan's grid"
    )
    add_skull_stripped(p)
    add_synthesis(p, sampling=False)
    p.set_defaults(handler=age)


def sweep_ages(text: str) -> list[float]:
    """``FROM:TO:N`` -> N ages from FROM to TO (a one-line error otherwise)."""
    parts = text.split(":")
    try:
        start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise SynthBrainError(f"--sweep {text!r} is not FROM:TO:N, e.g. 60:80:5") from None
    if not 2 <= count <= MAX_SWEEP:
        raise SynthBrainError(f"--sweep {text!r}: N {count} is outside 2–{MAX_SWEEP}")
    return [round(start + (stop - start) * i / (count - 1), 3) for i in range(count)]


def _named(path: str | None, target: float, sweep: bool) -> str | None:
    """``brain.nii.gz`` -> ``brain-80.nii.gz`` for one age of a sweep."""
    if path is None or not sweep:
        return path
    from ..outputs.io import volume_suffix

    suffix = volume_suffix(Path(path)) or ""
    return f"{path[: len(path) - len(suffix)]}-{target:g}{suffix}"


def age(args) -> int:
    from ..outputs.io import ensure_writable, output_paths, read_volume

    sweep = args.sweep is not None
    targets = sweep_ages(args.sweep) if sweep else [args.to_age]
    outputs = []
    for target in targets:
        out, jacobian = _named(str(args.output), target, sweep), _named(args.jacobian, target, sweep)
        outputs.append((target, out, jacobian))
        planned_outputs(_with_output(args, out))
        if jacobian is not None:
            ensure_writable(output_paths(jacobian), args.overwrite)
    if args.preview and sweep:
        raise OutputError("--preview writes one picture; leave it out of a sweep")
    conditions = {"age": args.age, **({"sex": args.sex} if args.sex is not None else {})}
    for target in targets:  # every target age is in the model's range, before torch is imported
        check_args(args, BRAIN_KIND, {**conditions, "age": target})
    scan, affine = read_volume(args.scan)
    options = dict(
        age=args.age,
        sex=args.sex,
        to_age=targets if sweep else targets[0],
        ventricular_volume=args.ventricular_volume,
        brain_volume=args.brain_volume,
        seed=args.seed,
        skull_stripped=args.skull_stripped,
        **({"steps": args.steps} if args.steps is not None else {}),
        **({"guidance": args.guidance} if args.guidance is not None else {}),
    )
    _, results = run_pipeline(
        args, BRAIN_KIND, lambda p, prog: p.age(scan, affine, progress=prog, **options), conditions
    )
    results = results if isinstance(results, list) else [results]
    written = []
    from ..outputs.io import write_volume

    for (target, out, jacobian), result in zip(outputs, results):
        write_outputs(_with_output(args, out), result)
        if jacobian is not None:
            record = dict(result.provenance, description=f"log-Jacobian of the ageing to {target:g} (atrophy map)")
            written += write_volume(jacobian, result.log_jacobian, result.affine, record, overwrite=args.overwrite)
    for path in written:
        print(path)
    return 0


def _with_output(args, output: str):
    """``args`` with another ``-o`` (each age of a sweep has its own)."""
    import argparse

    return argparse.Namespace(**{**vars(args), "output": output})
