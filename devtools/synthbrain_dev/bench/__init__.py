"""``synthbrain-dev bench``: latency, end-to-end time and peak memory of synthesis paths, against the
model-zoo reference path, in one run.

Each (model, path) is measured in a fresh worker process (``python -m synthbrain_dev.bench
--worker``), so peak memory is that path's alone: build (not timed) -> warm-up (not timed) ->
``repeats`` timed runs. Per run: time of every network step (from the progress callback), time of
the decode, end-to-end wall time, peak resident memory (sampled every 5 ms from /proc; CUDA: max
allocated). Medians over runs are reported; per-step latency is the median over all steps of all
timed runs.

The **reference path** is a plain loop written like the MONAI model-zoo bundle's
``scripts/sampler.py``: ``torch.no_grad``, float32, contiguous NCDHW tensors, MONAI's
``DDIMScheduler`` with the card's schedule, 50 steps, ``decode_stage_2_outputs`` on the whole
latent. It shares no code with the pipelines' loop; it sees the same starting noise and conditions,
so outputs can be compared voxel by voxel (PSNR, MS-SSIM, max abs difference).

Models whose weights are not installed (the published Brain LDM here) are built from their card with
random weights, perturbed (MONAI zero-initialises the UNet's last convolution, so an unperturbed
UNet predicts zeros and every sampler would return the same latent).

The parts: what is measured (:mod:`.paths`), the bundle's reference loop (:mod:`.reference`), the
resident-memory sampler (:mod:`.memory`), the per-path worker processes (:mod:`.workers`), the
decode-only measurements (:mod:`.decode`) and the whole run with its table (:mod:`.runs`). The
output comparisons are :mod:`synthbrain_dev.evaluation.metrics`; random weights
:mod:`synthbrain_dev.random_weights`.
"""

from __future__ import annotations

from .decode import DECODE_VARIANTS, format_decode_table, measure_decode
from .paths import REFERENCE, PathSpec, default_paths, parse_path
from .reference import has_reference_loop, reference_sample, run_request
from .runs import bench, bench_decode, format_table
from .workers import measure, run_worker

__all__ = [
    "DECODE_VARIANTS",
    "REFERENCE",
    "PathSpec",
    "bench",
    "bench_decode",
    "default_paths",
    "format_decode_table",
    "format_table",
    "has_reference_loop",
    "measure",
    "measure_decode",
    "parse_path",
    "reference_sample",
    "run_request",
    "run_worker",
]
