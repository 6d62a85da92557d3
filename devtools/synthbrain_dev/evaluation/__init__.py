"""``synthbrain-dev evaluate MODEL``: measure a model on held-out phantoms and write a report.

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

from SynthBrainLib._version import __version__
from SynthBrainLib.errors import SynthBrainError
from SynthBrainLib.models.schema import LESION_NAMES
from SynthBrainLib.outputs.markdown import markdown_table
from SynthBrainLib.outputs.preview import montage, write_png
from SynthBrainLib.pipelines import (
    ConditionalBrainPipeline,
    LabelGeneratorPipeline,
    LabelToImagePipeline,
    load_pipeline,
)

from .evaluators import evaluate_conditional_brain, evaluate_label_generator, evaluate_label_to_image

Log = Callable[[str], None]


@dataclass(frozen=True)
class Evaluation:
    """How one pipeline class is evaluated: ``run(pipe, samples, steps, log, guidance) -> (report,
    example volumes, figures by name)``, the montage's display window for a card, and the report's
    Markdown section."""

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
    guidance: float | None = None,
) -> dict[str, Any]:
    """Evaluate a conditional-brain, label-generator or label-to-image model; write the report.

    ``preset`` ``published`` (default): the card's own sampler and steps in float32; ``fast``: the
    library's default setting (the reports of the latent demos in docs/evaluation). ``guidance``:
    the classifier-free guidance scale of the main report (default the card's); models trained for
    guidance are also measured at every scale of the guidance table. Besides ``<model>.png`` a
    figure named ``<model>-<name>.png`` is written for each figure the evaluation makes.
    """
    from SynthBrainLib.models.conditioning import resolve_guidance

    pipe = load_pipeline(model, device=device, preset=preset)
    card = pipe.card
    resolve_guidance(card.id, card.sampling, guidance)  # a scale the model cannot take fails before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"evaluating {card.id} on {samples} held-out phantom cases")
    start = time.time()
    evaluation = evaluation_for(pipe)
    report, volumes, figures = evaluation.run(pipe, samples, steps, log, guidance=guidance)
    window = evaluation.window(card)
    options = (
        (f" --steps {steps}" if steps else "")
        + (f" --guidance {guidance:g}" if guidance is not None else "")
        + (" --fast" if preset == "fast" else "")
    )
    header = {
        "model": card.id,
        "card_version": card.version,
        "preset": pipe.preset,
        "weights_sha256": {k: v.get("sha256") for k, v in pipe.weights_info.items()},
        "command": f"synthbrain-dev evaluate {model} --samples {samples}{options}",
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
    for name, figure in figures.items():
        write_png(out / f"{card.id}-{name}.png", figure)
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


MEASURE_HEADER = ("measure", "value", "target")


def _brain_markdown(r: dict[str, Any]) -> list[str]:
    """Conditional brain: volume control, sharpness, diversity, guidance table, slider and age sweeps."""
    v, b, d, sh = r["ventricular_volume"], r["brain_volume"], r["diversity"], r["sharpness"]
    lines = [
        f"{r['samples']} held-out phantoms; each sample requested that phantom's sex, age and measured "
        f"volumes ({r['sampler']}, {r['steps']} steps, {r['precision']}, guidance {r['guidance']:g}; "
        f"{r['seconds_per_sample']:.1f} s per sample).",
        "",
    ]
    lines += markdown_table(
        MEASURE_HEADER,
        [
            (
                "ventricular volume: Pearson r, requested vs measured on the generated T1",
                _f(v["pearson_r_requested_vs_measured"]),
                "≥ 0.8",
            ),
            (
                "ceiling: the same measurement vs true volume on the phantoms",
                _f(v["ceiling_r_measured_vs_true_on_phantoms"]),
                "—",
            ),
            ("ventricular volume: mean absolute error", f"{_f(v['mean_abs_error_ml'], 1)} mL", "—"),
            ("samples with an enclosed ventricle found", _f(v["enclosed_ventricle_rate"], 2), "—"),
            (
                "second estimator (deep CSF: CSF fraction 20 mm inside the brain mask, no component selection): r",
                f"{_f(v['deep_csf_pearson_r_requested_vs_measured'])} (ceiling on phantoms "
                f"{_f(v['deep_csf_ceiling_r_on_phantoms'])})",
                "—",
            ),
            ("brain volume: Pearson r, requested vs measured", _f(b["pearson_r_requested_vs_measured"]), "≥ 0.95"),
            ("brain volume: mean absolute error", f"{_f(b['mean_abs_error_ml'], 1)} mL", "—"),
            (
                "sharpness: mean gradient magnitude in the brain, samples / clean phantom renderings",
                _f(sh["mean_gradient_ratio_to_phantoms"]),
                "≈ 1",
            ),
            (
                "sharpness: spectral energy above 0.25 cycles/voxel, samples / clean phantom renderings",
                _f(sh["high_frequency_energy_ratio_to_phantoms"]),
                "≈ 1",
            ),
            (
                "MS-SSIM between samples (lower = more diverse)",
                f"{_f(d['ms_ssim_between_samples'])} ± {_f(d['ms_ssim_between_samples_sd'])}",
                "≈ phantoms",
            ),
            (
                "MS-SSIM between training-distribution phantoms",
                f"{_f(d['ms_ssim_between_phantoms'])} ± {_f(d['ms_ssim_between_phantoms_sd'])}",
                "—",
            ),
        ],
    )
    if len(r.get("guidance_table", [])) > 1:
        lines += ["", "Classifier-free guidance, the same requests and seeds at each scale:", ""]
        lines += markdown_table(
            (
                "guidance",
                "ventricles r",
                "deep CSF r",
                "enclosed ventricle",
                "brain r",
                "sharpness",
                "MS-SSIM",
                "s/sample",
            ),
            [
                (
                    f"{t['guidance']:g}",
                    _f(t["ventricular_r"]),
                    _f(t["deep_csf_r"]),
                    _f(t["enclosed_ventricle_rate"], 2),
                    _f(t["brain_r"]),
                    _f(t["sharpness_ratio"]),
                    _f(t["ms_ssim_between_samples"]),
                    f"{t['seconds_per_sample']:.2f}",
                )
                for t in r["guidance_table"]
            ],
        )
    s = r.get("slider_sweep")
    if s:
        lines += [
            "",
            f"Ventricular-volume slider sweep ({s['note']}; seeds {', '.join(map(str, s['seeds']))}): "
            f"![slider sweep]({r['model']}-slider.png)",
            "",
        ]
        measured = [
            (f"measured, seed {seed}", *(f"{x:.1f}" for x in row))
            for seed, row in zip(s["seeds"], s["measured_ml_per_seed"])
        ]
        measured.append(("measured, mean", *(f"{x:.1f}" for x in s["mean_measured_ml"])))
        lines += markdown_table(("requested (mL)", *(f"{x:g}" for x in s["requested_ml"])), measured)
        lines += [
            "",
            f"Slope of measured on requested volume {s['slope_measured_per_requested']:.2f}; monotonic in "
            f"{s['monotonic_seeds']} of {len(s['seeds'])} seeds.",
        ]
    lines += ["", "Age sweeps (same seed, female; mean measured ventricular volume over 3 seeds):", ""]
    lines += markdown_table(
        ("sweep", "ages", "mean ventricular volume (mL)", "Spearman", "monotonic (mean / seeds)"),
        [
            (
                name.replace("_", " "),
                f"{a['ages'][0]:g}–{a['ages'][-1]:g}",
                ", ".join(f"{x:.1f}" for x in a["mean_over_seeds"]),
                _f(a["spearman_age_vs_mean"], 2),
                f"{'yes' if a['monotonic_mean'] else 'no'} / {a['monotonic_seeds']} of 3",
            )
            for name, a in r["age_sweeps"].items()
        ],
    )
    return lines


def _labels_markdown(r: dict[str, Any]) -> list[str]:
    """Label generator: lesion presence, fractions against the request, guidance table."""
    lines = [
        f"{r['samples']} samples: a quarter each with no lesion, WMH only, a tumour (core + edema + "
        f"enhancing), and both ({r['sampler']}, {r['steps']} steps, {r['precision']}, guidance {r['guidance']:g}; "
        f"{r['seconds_per_sample']:.1f} s per sample).",
        "",
    ]
    rows = [
        ("requested lesion classes present", _f(r["requested_present_rate"]), "—"),
        ("unrequested lesion classes absent (no voxel)", _f(r["unrequested_absent_rate"]), "—"),
        ("unrequested lesion classes below 0.1 % of the brain", _f(r["unrequested_below_0.1pct_rate"]), "—"),
        ("no lesion (< 0.1 %) when none requested", _f(r["no_lesion_when_none_requested_rate"]), "—"),
        ("WMH fraction: Pearson r, requested vs generated", _f(r["wmh_pearson_r_requested_vs_generated"]), "—"),
    ]
    for k, ratio in r["median_ratio_generated_to_requested"].items():
        rows.append((f"{k}: median generated / requested fraction", _f(ratio, 2), "0.67–1.5"))
    for k, (req, gen) in r["tumour_mean_fractions_requested_vs_generated"].items():
        rows.append((f"{k}: requested {req:.4f}, generated mean", f"{gen:.4f}", "—"))
    rows.append(
        (
            "MS-SSIM between label maps (lower = more diverse)",
            f"{_f(r['ms_ssim_between_samples'])} ± {_f(r['ms_ssim_between_samples_sd'])}",
            "—",
        )
    )
    lines += markdown_table(MEASURE_HEADER, rows)
    if r.get("per_request_type"):
        lines += [
            "",
            "Per request type: samples whose every unrequested lesion class stays below 0.1 % of the brain "
            "(target >= 0.95), the largest unrequested fraction seen, each requested class's median "
            "generated / requested fraction (target 0.67-1.5), and its share of samples that came out below a "
            "tenth of the request (missing):",
            "",
        ]
        lines += markdown_table(
            (
                "request",
                "samples",
                "unrequested < 0.1 % (samples)",
                "largest unrequested",
                "median generated / requested",
                "missing (< 0.1 x request)",
            ),
            [
                (
                    case,
                    str(t["samples"]),
                    _f(t["unrequested_below_0.1pct_samples"], 3),
                    f"{t['unrequested_max_fraction']:.4f}",
                    ", ".join(f"{k} {_f(v, 2)}" for k, v in t["median_ratio_generated_to_requested"].items()) or "—",
                    ", ".join(f"{k} {_f(v, 2)}" for k, v in t.get("requested_missing_samples", {}).items()) or "—",
                )
                for case, t in r["per_request_type"].items()
            ],
        )
    if r.get("tumour_amounts"):
        a = r["tumour_amounts"]
        lines += [
            "",
            f"Tumour amounts: {a['samples']} requests, each a held-out phantom tumour's own core, edema and "
            f"enhancing fractions (guidance {a['guidance']:g}). Pearson r of log requested vs log generated "
            "(does the generator follow the amount?) and the median generated / requested (the requests are "
            "partial-volume fractions, which the label decoder gives back larger):",
            "",
        ]
        lines += markdown_table(
            ("class", "requested", "log r, requested vs generated", "median generated / requested"),
            [
                (
                    k,
                    str(c["requested"]),
                    _f(c["log_pearson_r"], 2),
                    _f(c["median_ratio_generated_to_requested"], 2),
                )
                for k, c in a["classes"].items()
            ],
        )
    if len(r.get("guidance_table", [])) > 1:
        lines += [
            "",
            "Classifier-free guidance, the same requests and seeds at each scale (median generated / requested):",
            "",
        ]
        lines += markdown_table(
            ("guidance", *LESION_NAMES, "requested present", "unrequested < 0.1 %", "MS-SSIM"),
            [
                (
                    f"{t['guidance']:g}",
                    *(_f(t["median_ratio_generated_to_requested"][name], 2) for name in LESION_NAMES),
                    _f(t["requested_present_rate"], 2),
                    _f(t["unrequested_below_0.1pct_rate"], 2),
                    _f(t["ms_ssim_between_samples"]),
                )
                for t in r["guidance_table"]
            ],
        )
    return lines


def _image_markdown(r: dict[str, Any]) -> list[str]:
    """Label to image: painted-lesion Dice, tissue ordering, agreement with the renderer."""
    lines = [
        f"{r['cases']} held-out healthy phantom label maps, each with a white-matter lesion painted in "
        f"as `wmh` and rendered in every sequence ({r['seconds_per_image']:.2f} s per image).",
        "",
    ]
    rows = [
        (
            f"FLAIR: Dice of painted lesion vs hyperintensity ({r['flair_threshold_rule']})",
            f"{_f(r['flair_lesion_dice_mean'])} (min {_f(r['flair_lesion_dice_min'])})",
            "≥ 0.6",
        )
    ]
    for seq, o in r["tissue_ordering"].items():
        m = o["mean_intensity"]
        rows.append(
            (
                f"{seq}: tissue ordering {' < '.join(o['expected_increasing'])} correct",
                f"{_f(o['ordering_correct_rate'])} (csf {m['csf']:.2f}, gm {m['gm']:.2f}, wm {m['wm']:.2f}, "
                f"wmh {m['wmh']:.2f})",
                "1.0",
            )
        )
    for seq, c in r["pearson_r_with_phantom_renderer"].items():
        rows.append((f"{seq}: Pearson r with the phantom renderer's clean image", _f(c), "—"))
    return lines + markdown_table(MEASURE_HEADER, rows)


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
