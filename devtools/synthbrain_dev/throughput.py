"""Batch throughput: samples per hour of ``synthbrain batch``, one process using every core's thread
against ``torchrun`` with one single-threaded process per core.

Each configuration runs the real command line (``python -m SynthBrainLib.cli batch``, under
``torch.distributed.run`` for several processes) on the same plan in a fresh output folder; the wall
time covers the whole command: start, model loading, every sample, the manifest. The batch's seeds
do not depend on how the work is shared, so the volumes differ only by how the CPU rounds: the
largest voxel difference from the first configuration is reported (0 with equal thread counts).

Full-size Brain LDM has no installable weights here: ``--random-weights`` writes a temporary model
folder with the card's networks and random (perturbed) weights, whose timings are the real model's.

Reproduce (docs/benchmarks.md)::

    python -m synthbrain_dev.throughput brain-ldm-demo --samples 16
    python -m synthbrain_dev.throughput brain-ldm --samples 4 --random-weights
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from SynthBrainLib.outputs.io import read_volume
from SynthBrainLib.outputs.markdown import markdown_table

from .machine import machine
from .random_weights import RANDOM_WEIGHTS, random_weights_folder

#: (processes, threads per process) compared by default on this 2-core machine.
CONFIGURATIONS = ((1, 2), (2, 1))


def run_batch(
    model: str, out: Path, samples: int, processes: int, threads: int, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """Run ``synthbrain batch`` once; wall time of the whole command."""
    args = ["batch", "--model", model, "-n", str(samples), "--out", str(out), "--seed", "0", "--quiet", *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if processes > 1:
        port = str(29500 + os.getpid() % 1000)
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
        cmd = launcher + ["--master-port", port, "-m", "SynthBrainLib.cli", *args]
    else:
        cmd = [sys.executable, "-m", "SynthBrainLib.cli", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"batch ({processes} x {threads}) failed:\n{proc.stderr[-2000:]}")
    return {
        "processes": processes,
        "threads": threads,
        "samples": samples,
        "wall_s": seconds,
        "samples_per_hour": samples * 3600.0 / seconds,
    }


def throughput(
    model: str,
    samples: int,
    *,
    random_weights: bool = False,
    configurations: Sequence[tuple[int, int]] = CONFIGURATIONS,
    extra: Sequence[str] = (),
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Samples per hour of each (processes, threads) configuration on the same batch plan."""
    with tempfile.TemporaryDirectory() as tmp:
        target = str(random_weights_folder(model, Path(tmp) / "model")) if random_weights else model
        rows, first = [], None
        for processes, threads in configurations:
            out = Path(tmp) / f"out-{processes}x{threads}"
            log(f"{model}: {samples} samples, {processes} process(es) x {threads} thread(s) ...")
            row = run_batch(target, out, samples, processes, threads, extra)
            volumes = [read_volume(p)[0] for p in sorted(out.glob("sample_*.nii.gz"))]
            if len(volumes) != samples:
                raise RuntimeError(f"{processes} x {threads}: {len(volumes)} volumes written, {samples} planned")
            if first is None:
                first = volumes
            row["identical_to_first"] = all(np.array_equal(a, b) for a, b in zip(volumes, first))
            # oneDNN splits a convolution's reductions by thread: other thread counts round differently
            row["max_abs_diff_vs_first"] = max(float(np.abs(a - b).max()) for a, b in zip(volumes, first))
            log(f"  {row['wall_s']:.1f} s, {row['samples_per_hour']:.0f} samples/hour")
            rows.append(row)
    return {
        "machine": machine(),
        "model": model,
        "weights": RANDOM_WEIGHTS if random_weights else "installed",
        "options": list(extra),
        "runs": rows,
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table (one row per configuration)."""
    header = (
        "model | weights | processes x threads | samples | wall (s) | samples / hour | "
        "max abs difference from the first configuration's volumes"
    ).split(" | ")
    rows = [
        (
            report["model"],
            report["weights"],
            f"{r['processes']} x {r['threads']}",
            r["samples"],
            f"{r['wall_s']:.1f}",
            f"{r['samples_per_hour']:.0f}",
            "0 (identical)" if r["identical_to_first"] else format(r["max_abs_diff_vs_first"], ".3g"),
        )
        for r in report["runs"]
    ]
    return "\n".join(markdown_table(header, rows))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m synthbrain_dev.throughput", description=__doc__.split("\n")[0])
    p.add_argument("model", help="model id or folder")
    p.add_argument("--samples", type=int, default=8, help="samples per configuration (default 8)")
    p.add_argument("--random-weights", action="store_true", help="time the card's networks with random weights")
    p.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON")
    args, extra = p.parse_known_args(argv)
    if not 1 <= args.samples <= 10_000:
        p.error(f"--samples {args.samples} is outside 1–10000")
    report = throughput(
        args.model,
        args.samples,
        random_weights=args.random_weights,
        extra=extra,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
