"""``synthbrain evaluate MODEL``: measure a model on held-out phantoms and write a report.

The report goes to ``<out>/<model>.json`` (every number), ``<out>/<model>.md`` (summary) and
``<out>/<model>.png`` (axial, coronal and sagittal mid-slices of example outputs).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..._version import __version__
from ...errors import SynthBrainError
from ...outputs.preview import montage, write_png
from ...pipelines import ConditionalBrainPipeline, LabelGeneratorPipeline, LabelToImagePipeline, load_pipeline
from .evaluators import evaluate_conditional_brain, evaluate_label_generator, evaluate_label_to_image

Log = Callable[[str], None]


@dataclass(frozen=True)
class Evaluation:
    """How one pipeline class is evaluated: ``run(pipe, samples, steps, log) -> (report, example
    volumes)``, the montage's display window for a card, and the report's Markdown section."""

    run: Callable[..., tuple[dict[str, Any], list[np.ndarray]]]
    window: Callable[[Any], tuple[float, float] | None]
    markdown: Callable[[dict[str, Any]], list[str]]


def evaluate_model(
    model: str,
    out: str | Path = "docs/evaluation",
    *,
    samples: int = 32,
    steps: int | None = None,
    device: str = "cpu",
    log: Log = print,
    preset: str = "published",
) -> dict[str, Any]:
    """Evaluate a conditional-brain, label-generator or label-to-image model; write the report.

    ``preset`` ``published`` (default): the card's own sampler and steps in float32, as the reports
    in docs/evaluation were made; ``fast`` evaluates the library's default setting."""

    pipe = load_pipeline(model, device=device, preset=preset)
    card = pipe.card
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"evaluating {card.id} on {samples} held-out phantom cases")
    start = time.time()
    evaluation = evaluation_for(pipe)
    report, volumes = evaluation.run(pipe, samples, steps, log)
    window = evaluation.window(card)
    header = {
        "model": card.id,
        "card_version": card.version,
        "preset": pipe.preset,
        "weights_sha256": {k: v.get("sha256") for k, v in pipe.weights_info.items()},
        "command": f"synthbrain evaluate {model} --samples {samples}" + (f" --steps {steps}" if steps else ""),
        "synthbrain": __version__,
        "torch": torch.__version__,
        "device": str(pipe.device),
        "threads": torch.get_num_threads(),
        "seconds": round(time.time() - start, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    report = {**header, **report}
    (out / f"{card.id}.json").write_text(json.dumps(report, indent=2, default=_json_default))
    write_png(out / f"{card.id}.png", montage(volumes, window=window))
    (out / f"{card.id}.md").write_text(render_markdown(report, evaluation))
    log(f"report written to {out / (card.id + '.md')}")
    return report


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(type(value))


def _f(x, digits=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def render_markdown(r: dict[str, Any], evaluation: Evaluation) -> str:
    lines = [
        f"# Evaluation of `{r['model']}`",
        "",
        f"Reproduce: `{r['command']}` (SynthBrain {r['synthbrain']}, torch {r['torch']}, {r['device']}, "
        f"{r['threads']} threads, {r['date']}; {r['seconds']:.0f} s).",
        "Weights sha256: " + ", ".join(f"{k} `{str(v)[:12]}…`" for k, v in r["weights_sha256"].items()) + ".",
        "",
        f"![montage]({r['model']}.png)",
        "",
    ]
    lines += evaluation.markdown(r)
    lines.append("")
    return "\n".join(lines)


def _brain_markdown(r: dict[str, Any]) -> list[str]:
    """Conditional brain: volume control, diversity and age sweeps."""
    v, b, d = r["ventricular_volume"], r["brain_volume"], r["diversity"]
    lines = [
        f"{r['samples']} held-out phantoms; each sample requested that phantom's sex, age and measured "
        f"volumes ({r['sampler']}, {r['steps']} steps, {r['seconds_per_sample']:.1f} s per sample).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        "| ventricular volume: Pearson r, requested vs measured on the generated T1 | "
        f"{_f(v['pearson_r_requested_vs_measured'])} | ≥ 0.8 |",
        "| ceiling: the same measurement vs true volume on the phantoms | "
        f"{_f(v['ceiling_r_measured_vs_true_on_phantoms'])} | — |",
        f"| ventricular volume: mean absolute error | {_f(v['mean_abs_error_ml'], 1)} mL | — |",
        f"| brain volume: Pearson r, requested vs measured | {_f(b['pearson_r_requested_vs_measured'])} | — |",
        f"| brain volume: mean absolute error | {_f(b['mean_abs_error_ml'], 1)} mL | — |",
        f"| MS-SSIM between samples (lower = more diverse) | {_f(d['ms_ssim_between_samples'])} ± "
        f"{_f(d['ms_ssim_between_samples_sd'])} | ≈ phantoms |",
        f"| MS-SSIM between training-distribution phantoms | {_f(d['ms_ssim_between_phantoms'])} ± "
        f"{_f(d['ms_ssim_between_phantoms_sd'])} | — |",
        "",
        "Age sweeps (same seed, female; mean measured ventricular volume over 3 seeds):",
        "",
        "| sweep | ages | mean ventricular volume (mL) | Spearman | monotonic (mean / seeds) |",
        "|---|---|---|---|---|",
    ]
    for name, s in r["age_sweeps"].items():
        lines.append(
            f"| {name.replace('_', ' ')} | {s['ages'][0]:g}–{s['ages'][-1]:g} | "
            f"{', '.join(f'{x:.1f}' for x in s['mean_over_seeds'])} | {_f(s['spearman_age_vs_mean'], 2)} "
            f"| {'yes' if s['monotonic_mean'] else 'no'} / {s['monotonic_seeds']} of 3 |"
        )
    return lines


def _labels_markdown(r: dict[str, Any]) -> list[str]:
    """Label generator: lesion presence and fractions."""
    lines = [
        f"{r['samples']} samples: a quarter each with no lesion, WMH only, a tumour (core + edema + "
        f"enhancing), and both ({r['steps']} steps, {r['seconds_per_sample']:.1f} s per sample).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requested lesion classes present | {_f(r['requested_present_rate'])} |",
        f"| unrequested lesion classes absent (no voxel) | {_f(r['unrequested_absent_rate'])} |",
        f"| unrequested lesion classes below 0.1 % of the brain | {_f(r['unrequested_below_0.1pct_rate'])} |",
        f"| no lesion (< 0.1 %) when none requested | {_f(r['no_lesion_when_none_requested_rate'])} |",
        f"| WMH fraction: Pearson r, requested vs generated | {_f(r['wmh_pearson_r_requested_vs_generated'])} |",
    ]
    for k, (req, gen) in r["tumour_mean_fractions_requested_vs_generated"].items():
        lines.append(f"| {k}: requested {req:.4f}, generated mean | {gen:.4f} |")
    return lines


def _image_markdown(r: dict[str, Any]) -> list[str]:
    """Label to image: painted-lesion Dice, tissue ordering, agreement with the renderer."""
    lines = [
        f"{r['cases']} held-out healthy phantom label maps, each with a white-matter lesion painted in "
        f"as `wmh` and rendered in every sequence ({r['seconds_per_image']:.2f} s per image).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| FLAIR: Dice of painted lesion vs hyperintensity ({r['flair_threshold_rule']}) | "
        f"{_f(r['flair_lesion_dice_mean'])} (min {_f(r['flair_lesion_dice_min'])}) | ≥ 0.6 |",
    ]
    for seq, o in r["tissue_ordering"].items():
        m = o["mean_intensity"]
        lines.append(
            f"| {seq}: tissue ordering {' < '.join(o['expected_increasing'])} correct | "
            f"{_f(o['ordering_correct_rate'])} (csf {m['csf']:.2f}, gm {m['gm']:.2f}, wm {m['wm']:.2f}, "
            f"wmh {m['wmh']:.2f}) | 1.0 |"
        )
    for seq, c in r["pearson_r_with_phantom_renderer"].items():
        lines.append(f"| {seq}: Pearson r with the phantom renderer's clean image | {_f(c)} | — |")
    return lines


#: Evaluation of each pipeline class (a subclass uses its nearest base's).
EVALUATIONS: dict[type, Evaluation] = {
    ConditionalBrainPipeline: Evaluation(evaluate_conditional_brain, lambda card: (0.0, 1.0), _brain_markdown),
    LabelGeneratorPipeline: Evaluation(
        evaluate_label_generator, lambda card: (0.0, float(len(card.labels) - 1)), _labels_markdown
    ),
    LabelToImagePipeline: Evaluation(evaluate_label_to_image, lambda card: None, _image_markdown),
}


def evaluation_for(pipe) -> Evaluation:
    """The evaluation of ``pipe``'s class (or its nearest evaluated base class)."""
    for cls in type(pipe).__mro__:
        if cls in EVALUATIONS:
            return EVALUATIONS[cls]
    raise SynthBrainError(f"no evaluation is defined for {type(pipe).__name__} ({pipe.card.kind} models)")


__all__ = ["evaluate_model"]
