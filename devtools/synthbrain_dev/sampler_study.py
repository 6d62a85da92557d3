"""Quality cost of fewer steps, other samplers and lower precision, measured on trained models.

``synthbrain-dev bench MODEL --quality N`` draws N requests (seed i, conditions spread over the card's
ranges), makes the **reference** for each - the model-zoo path: DDIM, 50 steps, float32, full
decode (the bundle's plain loop, :func:`synthbrain_dev.bench.reference_sample`) - and then every
candidate (sampler, steps, precision) for the same request, and reports per candidate:

* images: PSNR and 3D MS-SSIM against the reference (data range 1), mean over requests;
* Brain LDM-like models: the ventricular volume measured on each image
  (:func:`SynthBrainLib.outputs.measure.measure_ventricular_volume_ml`): Pearson r and mean
  absolute difference against the reference's measurements, and r against the requested volume;
* label generators: Dice of the label maps against the reference (mean over classes present) and
  r of the lesion volume against the reference's;
* label-to-image models (no sampler): PSNR / MS-SSIM of each precision against float32.

Two extra candidates give the scale of "no difference": DDIM with 100 steps (how much the reference
itself moves with more steps) and DPM-Solver++ with 100 steps (close to the exact ODE solution).
Every candidate, and the reference, is also compared with that converged sample
(``*_vs_converged``): a candidate at least as close to it as the reference is at least as accurate a
solution of the sampling ODE as the reference path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from SynthBrainLib.errors import SynthBrainError
from SynthBrainLib.outputs.markdown import markdown_table
from SynthBrainLib.pipelines import load_pipeline
from SynthBrainLib.pipelines.device import cpu_has_bf16

from .bench.reference import has_reference_loop, reference_sample
from .evaluation.metrics import label_dice, ms_ssim, pearson, psnr


@dataclass(frozen=True)
class Candidate:
    sampler: str | None
    steps: int | None
    precision: str

    @property
    def name(self) -> str:
        return f"{self.sampler} {self.steps} {self.precision}" if self.sampler else self.precision


#: The candidate that stands for the exact solution of the sampling ODE.
CONVERGED = Candidate("dpm++2m", 100, "float32")


#: Few-step solvers compared at these step counts (issue: as close to the converged result as the
#: published DDIM 50, in fewer network calls).
FEW_STEPS = (6, 8, 10, 12, 15)
FEW_STEP_SOLVERS = ("dpm++2m", "dpm++3m", "unipc")


def parse_candidate(text: str) -> Candidate:
    """``SAMPLER:STEPS:PRECISION`` (e.g. ``unipc:12:bfloat16``) as a :class:`Candidate`."""
    parts = str(text).split(":")
    if len(parts) != 3 or not parts[1].isdigit():
        raise SynthBrainError(f"candidate {text!r} is not SAMPLER:STEPS:PRECISION (e.g. unipc:12:bfloat16)")
    return Candidate(parts[0].lower(), int(parts[1]), parts[2].lower())


def default_candidates(card, bf16: bool) -> list[Candidate]:
    if card.sampling is None:
        return [Candidate(None, None, "float32")] + ([Candidate(None, None, "bfloat16")] if bf16 else [])
    out = [Candidate("ddim", n, "float32") for n in (10, 20, 100)]
    solvers = [s for s in FEW_STEP_SOLVERS if s in card.sampling.samplers]
    out += [Candidate(s, n, "float32") for s in solvers for n in FEW_STEPS]
    if CONVERGED.sampler in card.sampling.samplers:
        out.append(CONVERGED)
    if bf16:
        out += [Candidate("ddim", 50, "bfloat16"), Candidate("ddim", 50, "mixed")]
        out += [Candidate(s, n, p) for s in solvers for n in (8, 10) for p in ("bfloat16", "mixed")]
    return out


def study_requests(card, n: int) -> list[dict[str, Any]]:
    """N requests: seed i and conditions spread evenly over each continuous variable's typical (else
    full) range in a shuffled order per variable, categorical variables alternating."""
    rng = np.random.default_rng(1234)
    requests = []
    columns = {}
    for v in card.conditioning.variables:
        if v.kind == "continuous":
            lo, hi = v.typical_range or v.range
            values = lo + (np.arange(n) + 0.5) / n * (hi - lo)
            columns[v.name] = [float(round(x, 3)) for x in rng.permutation(values)]
        else:
            choices = list(v.choices)
            columns[v.name] = [choices[i % len(choices)] for i in range(n)]
    for i in range(n):
        requests.append({"seed": i, "conditions": {k: col[i] for k, col in columns.items()}})
    return requests


def _generate(pipe, candidate: Candidate, request: dict[str, Any], inputs: dict[str, Any]) -> np.ndarray:
    """One output (C, X, Y, Z) for ``request``; ``inputs``: the pipeline's example input (a label map for
    label-to-image; nothing for models that generate from conditions)."""
    if pipe.card.sampling is None:  # one network pass: no sampler or steps to vary
        return pipe.generate(**inputs, seed=request["seed"]).channels()
    return pipe.generate(
        **inputs, seed=request["seed"], sampler=candidate.sampler, steps=candidate.steps, **request["conditions"]
    ).channels()


def quality_study(
    model: str,
    *,
    samples: int = 8,
    device: str = "cpu",
    candidates: Sequence[Candidate] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Run the study for one model (weights must be installed). Returns a JSON-ready report."""

    pipes: dict[str, Any] = {}

    def pipe_for(precision: str):
        if precision not in pipes:
            pipes[precision] = load_pipeline(model, device=device, precision=precision, decode="full")
        return pipes[precision]

    base = pipe_for("float32")
    card = base.card
    bf16 = device.startswith("cuda") or cpu_has_bf16()
    if candidates and card.sampling is not None and CONVERGED.sampler in card.sampling.samplers:
        # chosen ones: always with the converged result, to compare with
        candidates = list(candidates) + ([CONVERGED] if CONVERGED not in candidates else [])
    candidates = list(candidates or default_candidates(card, bf16))
    requests = study_requests(card, samples)
    inputs = base.example_request()
    labels_out = base.output_type == "labels"
    reference, ref_measure, ref_seconds = [], [], []
    for req in requests:
        t = time.perf_counter()
        if not has_reference_loop(base):
            ref = _generate(base, Candidate(None, None, "float32"), req, inputs)
        else:
            ref = reference_sample(base, req["seed"], conditions=req["conditions"])
            for net in base.networks.values():  # reference_sample used NCDHW: back to the pipeline's layout
                base.precision.prepare(net)
        ref_seconds.append(time.perf_counter() - t)
        reference.append(ref)
        ref_measure.append(base.measured_volume_ml(ref))
    log(f"{card.id}: reference ({samples} requests) {np.mean(ref_seconds):.2f} s each")
    requested = [base.requested_volume_ml(req["conditions"]) for req in requests]
    requested = requested if all(v is not None for v in requested) else []
    rows = []
    outputs: dict[str, list[np.ndarray]] = {}
    for cand in candidates:
        pipe = pipe_for(cand.precision)
        psnrs, ssims, dices, measures, seconds = [], [], [], [], []
        outputs[cand.name] = []
        for req, ref in zip(requests, reference):
            t = time.perf_counter()
            out = _generate(pipe, cand, req, inputs)
            outputs[cand.name].append(out)
            seconds.append(time.perf_counter() - t)
            if labels_out:
                dices.append(label_dice(out, ref))
                psnrs.append(psnr(out, ref, 1.0))
            else:
                psnrs.append(psnr(out, ref, 1.0))
                ssims.append(ms_ssim(out[0], ref[0]))
            measures.append(pipe.measured_volume_ml(out))
        row: dict[str, Any] = {
            "candidate": cand.name,
            "sampler": cand.sampler,
            "steps": cand.steps,
            "precision": cand.precision,
            "seconds_mean": float(np.mean(seconds)),
            "psnr_db_mean": float(np.mean(psnrs)),
            "psnr_db_min": float(np.min(psnrs)),
        }
        if ssims:
            row.update(ms_ssim_mean=float(np.mean(ssims)), ms_ssim_min=float(np.min(ssims)))
        if dices:
            row.update(dice_mean=float(np.mean(dices)), dice_min=float(np.min(dices)))
        if measures and measures[0] is not None:
            row.update(
                volume_r_vs_reference=pearson(measures, ref_measure),
                volume_mean_abs_diff_ml=float(np.mean(np.abs(np.subtract(measures, ref_measure)))),
            )
            if requested:
                row["volume_r_vs_requested"] = pearson(measures, requested)
        log(
            f"  {cand.name}: {row['seconds_mean']:.2f} s, PSNR {row['psnr_db_mean']:.1f} dB"
            + (f", MS-SSIM {row['ms_ssim_mean']:.4f}" if ssims else "")
            + (f", Dice {row['dice_mean']:.3f}" if dices else "")
            + (f", volume r {row['volume_r_vs_reference']:.3f}" if "volume_r_vs_reference" in row else "")
        )
        rows.append(row)
    converged = outputs.get(CONVERGED.name)
    report_extra: dict[str, Any] = {}
    if converged is not None:

        def closeness(outs: list[np.ndarray]) -> dict[str, float]:
            res = {"psnr_db_vs_converged": float(np.mean([psnr(o, c, 1.0) for o, c in zip(outs, converged)]))}
            if labels_out:
                res["dice_vs_converged"] = float(np.mean([label_dice(o, c) for o, c in zip(outs, converged)]))
            else:
                res["ms_ssim_vs_converged"] = float(np.mean([ms_ssim(o[0], c[0]) for o, c in zip(outs, converged)]))
            return res

        report_extra["reference_vs_converged"] = closeness(reference)
        for row in rows:
            if row["candidate"] != CONVERGED.name:
                row.update(closeness(outputs[row["candidate"]]))
    report = {
        "model": card.id,
        "samples": samples,
        "requests": requests,
        **report_extra,
        "reference": "ddim 50 float32 full decode (bundle loop)" if card.sampling else "float32",
        "reference_seconds_mean": float(np.mean(ref_seconds)),
        "candidates": rows,
    }
    if ref_measure and ref_measure[0] is not None and requested:
        report["reference_volume_r_vs_requested"] = pearson(ref_measure, requested)
    return report


def format_quality_table(report: dict[str, Any]) -> str:
    """One Markdown table per model (times are in the JSON report: the speed table of
    :func:`synthbrain_dev.bench.format_table` is the one to quote)."""
    head = f"**{report['model']}**: {report['samples']} requests; reference = {report['reference']}"
    if "reference_volume_r_vs_requested" in report:
        head += f"; reference ventricular volume vs requested: r = {report['reference_volume_r_vs_requested']:.3f}"
    cols = ["candidate", "PSNR vs reference, mean / min (dB)"]
    has = lambda key: any(key in r for r in report["candidates"])  # noqa: E731
    if has("ms_ssim_mean"):
        cols.append("MS-SSIM vs reference, mean / min")
    if has("dice_mean"):
        cols.append("Dice vs reference, mean / min")
    if has("volume_r_vs_reference"):
        cols += ["volume r vs reference", "volume |diff| (mL)"]
    if has("volume_r_vs_requested"):
        cols.append("volume r vs requested")
    close_key = "ms_ssim_vs_converged" if has("ms_ssim_vs_converged") else "dice_vs_converged"
    if has("psnr_db_vs_converged"):
        cols.append("vs converged: PSNR (dB) / " + ("MS-SSIM" if close_key == "ms_ssim_vs_converged" else "Dice"))
        ref = report.get("reference_vs_converged", {})
        head += (
            f"; reference vs converged (dpm++2m 100): PSNR {ref.get('psnr_db_vs_converged', float('nan')):.1f} "
            f"dB / {ref.get(close_key, float('nan')):.4f}"
        )
    rows = []
    for r in report["candidates"]:
        cells = [r["candidate"], f"{r['psnr_db_mean']:.1f} / {r['psnr_db_min']:.1f}"]
        if has("ms_ssim_mean"):
            cells.append(f"{r['ms_ssim_mean']:.4f} / {r['ms_ssim_min']:.4f}")
        if has("dice_mean"):
            cells.append(f"{r['dice_mean']:.3f} / {r['dice_min']:.3f}")
        if has("volume_r_vs_reference"):
            cells += [
                f"{r.get('volume_r_vs_reference', float('nan')):.3f}",
                f"{r.get('volume_mean_abs_diff_ml', float('nan')):.2f}",
            ]
        if has("volume_r_vs_requested"):
            cells.append(f"{r.get('volume_r_vs_requested', float('nan')):.3f}")
        if has("psnr_db_vs_converged"):
            cells.append(
                "-" if "psnr_db_vs_converged" not in r else f"{r['psnr_db_vs_converged']:.1f} / {r[close_key]:.4f}"
            )
        rows.append(cells)
    return "\n".join([head, "", *markdown_table(cols, rows)])
