"""What each model kind is checked for, measured on held-out phantoms (``synthbrain-dev evaluate``).

* Conditional brain: requested vs measured ventricular and brain volume (Pearson r, beside the
  measurement's own ceiling on phantoms with known true volumes), age sweeps with a fixed seed,
  diversity (MS-SSIM between seeds vs between phantoms).
* Label generator: requested lesion classes present, unrequested ones absent, lesion volume
  tracking the request, no lesion when none is asked for.
* Label-to-image: a lesion painted into a healthy label map found again as FLAIR hyperintensity
  (Dice), tissue intensity ordering per sequence, agreement with the phantom renderer.

Held-out phantoms are drawn from the training population's distribution at indices the training
set never uses (``HELD_OUT_START`` onwards).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from scipy import ndimage as ndi

from SynthBrainLib.models.schema import LESION_NAMES
from SynthBrainLib.outputs.measure import brain_mask_from_image, measure_t1, measure_ventricular_volume_ml

from ..phantoms import PhantomPopulation, SubjectSpec
from ..phantoms.contrast import render_contrast
from ..phantoms.labels import paint_lesion
from .figures import captioned_grid
from .metrics import (
    dice,
    high_frequency_energy,
    is_monotonic_increasing,
    mean_gradient_magnitude,
    median_ratio,
    ms_ssim_pairs,
    pearson,
    spearman,
)

HELD_OUT_START = 100_000
Log = Callable[[str], None]


def _population(card, **lesion_odds: float) -> PhantomPopulation:
    """The phantom population on the card's output grid; ``lesion_odds``: ``p_wmh`` / ``p_tumour``."""
    shape = tuple(card.output.shape)
    spacing = float(card.output.spacing[0])
    return PhantomPopulation(seed=0, spacing_mm=spacing, shape=shape, **lesion_odds)


# ----------------------------------------------------------------------------------------------
#: Guidance scales of the table that the demo's default scale was chosen from.
GUIDANCE_TABLE = (1.0, 2.0, 3.0, 5.0)
#: Positions of the ventricular-volume slider in the sweep figure (share of the card's range).
SLIDER_POSITIONS = (0.05, 0.275, 0.5, 0.725, 0.95)


def _sampling_of(result) -> dict[str, Any]:
    """Sampler, steps, precision and preset a result was made with (from its provenance)."""
    p = result.provenance
    return {k: p.get(k) for k in ("sampler", "steps", "precision")} | {"preset": p.get("preset")}


def _guidance_scales(pipe, guidance: float | None, table: tuple[float, ...]) -> tuple[float, list[float]]:
    """(the scale of the main report, the scales of the table); a model without guidance training
    has only 1."""
    from SynthBrainLib.models.conditioning import resolve_guidance

    main = resolve_guidance(pipe.card.id, pipe.card.sampling, guidance)
    if pipe.card.sampling is None or pipe.card.sampling.guidance is None:
        return main, [main]
    g = pipe.card.sampling.guidance
    return main, sorted({float(w) for w in table if g.minimum <= w <= g.maximum} | {main})


def _held_out_requests(pipe, n: int) -> list[tuple[dict, Any]]:
    """(request, phantom subject) for ``n`` held-out phantoms: each asks for its phantom's sex, age
    and measured volumes (clipped to the card's ranges)."""
    pop = _population(pipe.card)
    var = {v.name: v for v in pipe.card.conditioning.variables}
    out = []
    for i in range(n):
        subject = pop.subject(HELD_OUT_START + i)
        req = {
            "sex": subject.spec.sex,
            "age": float(np.clip(subject.spec.age, *var["age"].range)),
            "ventricular_volume": float(
                np.clip(subject.measured_ventricular_volume_ml, *var["ventricular_volume"].range)
            ),
            "brain_volume": float(np.clip(subject.measured_brain_volume_ml, *var["brain_volume"].range)),
        }
        out.append((req, subject))
    return out


def brain_volume_control(
    pipe, requests: list[dict], steps: int | None, guidance: float, phantom_sharpness: float, log: Log = print
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Generate one brain per request (seed = its index) at ``guidance``; requested vs measured
    volumes with two estimators, sharpness against the phantoms, diversity. Returns (summary with
    rows, generated images)."""
    rows, generated = [], []
    affine = pipe.card.output.affine
    for i, req in enumerate(requests):
        t = time.time()
        result = pipe.generate(seed=i, steps=steps, guidance=guidance, **req)
        seconds = time.time() - t
        m = measure_t1(result.image, affine)
        generated.append(result.image)
        sampling = _sampling_of(result)
        rows.append(
            {
                **req,
                "measured_ventricular_volume": m["ventricular_volume_ml"],
                "measured_deep_csf": m["deep_csf_ml"],
                "measured_brain_volume": m["brain_volume_ml"],
                "enclosed_ventricle_found": m["ventricular_volume_ml"] > 0,
                "mean_gradient": mean_gradient_magnitude(result.image, brain_mask_from_image(result.image)),
                "high_frequency_energy": high_frequency_energy(result.image),
                "seconds": seconds,
            }
        )
        log(
            f"  guidance {guidance:g}, sample {i + 1}/{len(requests)}: ventricles requested "
            f"{req['ventricular_volume']:.1f} mL -> measured {m['ventricular_volume_ml']:.1f} mL"
        )
    col = lambda k: np.array([r[k] for r in rows], np.float64)  # noqa: E731
    diversity, diversity_sd = ms_ssim_pairs(generated)
    summary = {
        "guidance": guidance,
        "sampling": sampling,
        "seconds_per_sample": float(col("seconds").mean()),
        "ventricular_r": pearson(col("ventricular_volume"), col("measured_ventricular_volume")),
        "ventricular_mae_ml": float(np.abs(col("ventricular_volume") - col("measured_ventricular_volume")).mean()),
        "enclosed_ventricle_rate": float(col("enclosed_ventricle_found").mean()),
        "deep_csf_r": pearson(col("ventricular_volume"), col("measured_deep_csf")),
        "brain_r": pearson(col("brain_volume"), col("measured_brain_volume")),
        "brain_mae_ml": float(np.abs(col("brain_volume") - col("measured_brain_volume")).mean()),
        "sharpness_ratio": float(col("mean_gradient").mean() / phantom_sharpness),
        "ms_ssim_between_samples": diversity,
        "ms_ssim_between_samples_sd": diversity_sd,
        "rows": rows,
    }
    return summary, generated


def ventricle_slider_sweep(
    pipe, steps: int | None, guidance: float, seeds=(0, 1, 2), positions=SLIDER_POSITIONS, log: Log = print
) -> tuple[dict[str, Any], np.ndarray]:
    """Move only the ventricular-volume slider over ``positions`` of its range (other conditions at
    the card's defaults, female, 65 years) at fixed seeds; measure each image. Returns (report,
    figure: one row per seed, the measured volume under each image)."""
    card = pipe.card
    lo, hi = {v.name: v for v in card.conditioning.variables}["ventricular_volume"].range
    values = [round(lo + p * (hi - lo), 1) for p in positions]
    measured, images = [], []
    for seed in seeds:
        row_m, row_i = [], []
        for value in values:
            image = pipe.generate(
                sex="female", age=65.0, ventricular_volume=value, seed=500 + seed, steps=steps, guidance=guidance
            ).image
            m = measure_t1(image, card.output.affine)
            row_m.append([m["ventricular_volume_ml"], m["deep_csf_ml"]])
            row_i.append(image)
        log(f"  slider sweep, seed {500 + seed}: " + ", ".join(f"{v:g}->{x[0]:.1f}" for v, x in zip(values, row_m)))
        measured.append(row_m)
        images.append(row_i)
    m = np.asarray(measured)  # (seeds, positions, estimators)
    captions = [[[f"set {v:.1f} mL", f"got {x[0]:.1f} mL"] for v, x in zip(values, row)] for row in measured]
    figure = captioned_grid(images, captions)
    span = positions[-1] - positions[0]
    report = {
        "seeds": [500 + s for s in seeds],
        "requested_ml": values,
        "measured_ml_per_seed": m[..., 0].round(2).tolist(),
        "deep_csf_ml_per_seed": m[..., 1].round(2).tolist(),
        "mean_measured_ml": m[..., 0].mean(0).round(2).tolist(),
        "spearman_per_seed": [spearman(values, row) for row in m[..., 0]],
        "monotonic_seeds": int(sum(is_monotonic_increasing(row) for row in m[..., 0])),
        "slope_measured_per_requested": float(np.polyfit(values, m[..., 0].mean(0), 1)[0]),
        "positions": list(positions),
        "note": f"sex female, age 65, other volumes at the card's defaults; slider {positions[0]:.0%}-"
        f"{positions[-1]:.0%} of {lo:g}-{hi:g} mL ({span:.0%} of the range)",
    }
    return report, figure


def _age_sweeps(pipe, steps, guidance, rows, log: Log) -> dict[str, Any]:
    """Age sweeps, 3 seeds: (a) only age changes; (b) volumes follow the phantoms' age trend."""
    card = pipe.card
    var = {v.name: v for v in card.conditioning.variables}
    col = lambda k: np.array([r[k] for r in rows], np.float64)  # noqa: E731
    ages = np.linspace(var["age"].range[0], var["age"].range[1], 8)
    vent_fit = np.polyfit(col("age"), col("ventricular_volume"), 1)
    brain_fit = np.polyfit(col("age"), col("brain_volume"), 1)
    sweeps = {}
    for name, follow in (("age_only", False), ("age_with_typical_volumes", True)):
        measured = []
        for seed in range(3):
            per_seed = []
            for age in ages:
                kwargs = {"sex": "female", "age": float(age)}
                if follow:
                    kwargs["ventricular_volume"] = float(
                        np.clip(np.polyval(vent_fit, age), *var["ventricular_volume"].range)
                    )
                    kwargs["brain_volume"] = float(np.clip(np.polyval(brain_fit, age), *var["brain_volume"].range))
                image = pipe.generate(seed=1000 + seed, steps=steps, guidance=guidance, **kwargs).image
                per_seed.append(measure_ventricular_volume_ml(image, card.output.affine))
            measured.append(per_seed)
        log(f"  age sweep {name}: done")
        m = np.asarray(measured)
        sweeps[name] = {
            "ages": ages.round(1).tolist(),
            "measured_ventricular_volume_ml_per_seed": m.round(2).tolist(),
            "mean_over_seeds": m.mean(0).round(2).tolist(),
            "spearman_age_vs_mean": spearman(ages, m.mean(0)),
            "monotonic_mean": is_monotonic_increasing(m.mean(0)),
            "monotonic_seeds": int(sum(is_monotonic_increasing(s) for s in m)),
        }
        if follow:
            sweeps[name]["ventricular_volume_requested_ml"] = [
                round(float(np.clip(np.polyval(vent_fit, a), *var["ventricular_volume"].range)), 2) for a in ages
            ]
    return sweeps


def evaluate_conditional_brain(
    pipe,
    n: int = 32,
    steps: int | None = None,
    log: Log = print,
    guidance: float | None = None,
    guidance_table: tuple[float, ...] = GUIDANCE_TABLE,
) -> tuple[dict[str, Any], list[np.ndarray], dict[str, np.ndarray]]:
    """Volume control, sharpness and diversity on ``n`` held-out phantoms at every scale of
    ``guidance_table`` (models trained for guidance), then the ventricle slider sweep and the age
    sweeps at the main scale (``guidance``, default the card's). Returns (report, montage volumes,
    figures by name)."""

    card = pipe.card
    main, scales = _guidance_scales(pipe, guidance, guidance_table)
    start = time.time()
    pairs = _held_out_requests(pipe, n)
    requests = [req for req, _ in pairs]
    phantoms = [s.images["T1"] for _, s in pairs]
    true_vent = np.array([s.true_ventricular_volume_ml for _, s in pairs])
    requested_vent = np.array([r["ventricular_volume"] for r in requests])
    phantom_deep = np.array([s.measured_deep_csf_ml for _, s in pairs])  # the requests' analysis, cached
    # Sharpness is compared with each phantom's clean rendering (no noise, bias or texture): the
    # noise of the phantoms' T1 holds most of their high-frequency energy, and a model that renders
    # anatomy as sharply as the phantoms but without their noise should score 1.
    spacing = float(card.output.spacing[0])
    clean = [render_contrast(s.partial_volumes, "T1", None, spacing_mm=spacing) for _, s in pairs]
    phantom_sharpness = float(np.mean([mean_gradient_magnitude(c, brain_mask_from_image(c)) for c in clean]))
    phantom_hf = float(np.mean([high_frequency_energy(c) for c in clean]))
    table, generated = [], None
    for w in scales:
        summary, images = brain_volume_control(pipe, requests, steps, w, phantom_sharpness, log)
        summary["high_frequency_energy_ratio"] = float(
            np.mean([r["high_frequency_energy"] for r in summary["rows"]]) / phantom_hf
        )
        table.append(summary)
        if w == main:
            generated = images
    chosen = next(t for t in table if t["guidance"] == main)
    mean_ph, sd_ph = ms_ssim_pairs(phantoms)
    report: dict[str, Any] = {
        "samples": n,
        **chosen["sampling"],
        "guidance": main,
        "seconds_per_sample": chosen["seconds_per_sample"],
        "ventricular_volume": {
            "pearson_r_requested_vs_measured": chosen["ventricular_r"],
            "mean_abs_error_ml": chosen["ventricular_mae_ml"],
            "enclosed_ventricle_rate": chosen["enclosed_ventricle_rate"],
            "ceiling_r_measured_vs_true_on_phantoms": pearson(requested_vent, true_vent),
            "deep_csf_pearson_r_requested_vs_measured": chosen["deep_csf_r"],
            "deep_csf_ceiling_r_on_phantoms": pearson(phantom_deep, true_vent),
            "requested_range_ml": [float(requested_vent.min()), float(requested_vent.max())],
        },
        "brain_volume": {
            "pearson_r_requested_vs_measured": chosen["brain_r"],
            "mean_abs_error_ml": chosen["brain_mae_ml"],
        },
        "sharpness": {
            "mean_gradient_ratio_to_phantoms": chosen["sharpness_ratio"],
            "high_frequency_energy_ratio_to_phantoms": chosen["high_frequency_energy_ratio"],
            "clean_phantom_mean_gradient": phantom_sharpness,
            "noisy_phantom_mean_gradient": float(
                np.mean([mean_gradient_magnitude(p, brain_mask_from_image(p)) for p in phantoms])
            ),
        },
        "diversity": {
            "ms_ssim_between_samples": chosen["ms_ssim_between_samples"],
            "ms_ssim_between_samples_sd": chosen["ms_ssim_between_samples_sd"],
            "ms_ssim_between_phantoms": mean_ph,
            "ms_ssim_between_phantoms_sd": sd_ph,
        },
        "guidance_table": [{k: v for k, v in t.items() if k != "rows"} for t in table],
        "rows": chosen["rows"],
    }
    report["slider_sweep"], figure = ventricle_slider_sweep(pipe, steps, main, log=log)
    report["age_sweeps"] = _age_sweeps(pipe, steps, main, chosen["rows"], log)
    report["seconds_total"] = time.time() - start
    return report, generated[:3] + phantoms[:1], {"slider": figure}


# ----------------------------------------------------------------------------------------------
#: The lesion classes of a tumour (core, edema, enhancing), requested together.
TUMOUR_NAMES = LESION_NAMES[1:]


def _label_cases(card, n: int) -> list[tuple[str, dict[str, float]]]:
    """``n`` requests: a quarter each with no lesion, WMH only, a tumour (core + edema + enhancing)
    at the training medians, and both."""
    var = {v.name: v for v in card.conditioning.variables}
    typical = {
        name: float(np.median([r for r in _training_fractions(card, name)] or [var[name].range[1] / 2]))
        for name in LESION_NAMES
    }
    rng = np.random.default_rng(0)
    per = max(1, n // 4)
    cases = [("none", {}) for _ in range(per)]
    cases += [("wmh", {"wmh": float(rng.uniform(0.25, 1.0) * var["wmh"].range[1])}) for _ in range(per)]
    cases += [("tumour", {k: typical[k] for k in TUMOUR_NAMES}) for _ in range(per)]
    cases += [("both", {"wmh": typical["wmh"], **{k: typical[k] for k in TUMOUR_NAMES}}) for _ in range(n - 3 * per)]
    return cases


def label_control(
    pipe, cases, steps: int | None, guidance: float, log: Log = print
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Generate one label map per case (seed = its index) at ``guidance``; lesion presence,
    fractions against the request, diversity. Returns (summary with rows, label maps)."""
    rows, maps = [], []
    n_classes = len(pipe.card.labels)
    t0 = time.time()
    for i, (kind, request) in enumerate(cases):
        result = pipe.generate(seed=i, steps=steps, guidance=guidance, **request)
        lesions = result.provenance["lesions"]
        rows.append(
            {
                "case": kind,
                "requested": {k: request.get(k, 0.0) for k in LESION_NAMES},
                "fraction": {k: lesions[k]["fraction"] for k in LESION_NAMES},
                "present": {k: lesions[k]["present"] for k in LESION_NAMES},
            }
        )
        maps.append(result.labels)
        sampling = _sampling_of(result)
        log(
            f"  guidance {guidance:g}, sample {i + 1}/{len(cases)} ({kind}): "
            + ", ".join(f"{k} {lesions[k]['fraction']:.4f}" for k in LESION_NAMES)
        )
    seconds = (time.time() - t0) / len(cases)
    requested_present, unrequested_absent = [], []
    for r in rows:
        for k in LESION_NAMES:
            (requested_present if r["requested"][k] > 0 else unrequested_absent).append(
                r["present"][k] if r["requested"][k] > 0 else not r["present"][k]
            )
    tiny = 1e-3  # "absent" allows a few stray voxels: fraction below 0.1 % of the brain
    wmh_rows = [r for r in rows if r["case"] == "wmh"]
    diversity, diversity_sd = ms_ssim_pairs([m.astype(np.float32) / (n_classes - 1) for m in maps])
    summary = {
        "guidance": guidance,
        "sampling": sampling,
        "seconds_per_sample": seconds,
        "requested_present_rate": float(np.mean(requested_present)),
        "unrequested_absent_rate": float(np.mean(unrequested_absent)),
        "unrequested_below_0.1pct_rate": float(
            np.mean([r["fraction"][k] < tiny for r in rows for k in LESION_NAMES if r["requested"][k] == 0])
        ),
        "no_lesion_when_none_requested_rate": float(
            np.mean([all(r["fraction"][k] < tiny for k in LESION_NAMES) for r in rows if r["case"] == "none"])
        ),
        "wmh_pearson_r_requested_vs_generated": pearson(
            [r["requested"]["wmh"] for r in wmh_rows], [r["fraction"]["wmh"] for r in wmh_rows]
        ),
        "median_ratio_generated_to_requested": {
            k: median_ratio([r["fraction"][k] for r in rows], [r["requested"][k] for r in rows]) for k in LESION_NAMES
        },
        "ms_ssim_between_samples": diversity,
        "ms_ssim_between_samples_sd": diversity_sd,
        "per_request_type": per_request_type(rows, tiny),
        "rows": rows,
    }
    return summary, maps


def per_request_type(rows: list[dict[str, Any]], tiny: float = 1e-3) -> dict[str, dict[str, Any]]:
    """Per request type (``none``, ``wmh``, ``tumour``, ``both``): how many samples, the share of
    samples whose every unrequested lesion class stays below ``tiny`` of the brain (issue 23's target:
    >= 95 %), the largest unrequested fraction, each requested class's median generated /
    requested fraction (target within 1.5x) and its share of samples below a tenth of the request."""
    out = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        group = [r for r in rows if r["case"] == case]
        unrequested = [[r["fraction"][k] for k in LESION_NAMES if r["requested"][k] == 0] for r in group]
        requested = [k for k in LESION_NAMES if any(r["requested"][k] > 0 for r in group)]
        out[case] = {
            "samples": len(group),
            "unrequested_below_0.1pct_samples": float(np.mean([all(f < tiny for f in u) for u in unrequested])),
            "unrequested_max_fraction": float(max((max(u) for u in unrequested if u), default=0.0)),
            "median_ratio_generated_to_requested": {
                k: median_ratio([r["fraction"][k] for r in group], [r["requested"][k] for r in group])
                for k in requested
            },
            # Why: a median ratio hides a split between "not made" and "made too large"
            # (labels-demo's tumour core), which the share of near-misses shows.
            "requested_missing_samples": {
                k: float(np.mean([r["fraction"][k] < 0.1 * r["requested"][k] for r in group])) for k in requested
            },
        }
    return out


def tumour_amounts(pipe, n: int, steps: int | None, guidance: float, log: Log = print) -> dict[str, Any]:
    """Does the generator follow the amount of each tumour class? ``n`` requests, each one held-out
    phantom tumour's own core, edema and enhancing fractions (classes it lacks not asked; seed 10000 +
    its index; ``requested`` / ``generated`` rows in the order of ``TUMOUR_NAMES``): combinations that
    occur, unlike the three medians asked at once, and amounts spread over the population (core: a
    35x range from the 10th to the 90th centile).

    Per class: Pearson r of log requested vs log generated fraction (generated floored at 1e-5) and
    the median generated / requested ratio. The requests are the phantoms' partial-volume fractions,
    which the label decoder gives back about 1.0x (core), 1.3x (enhancing) and 1.8x (edema) larger
    (labels-demo's autoencoder), so r, not the ratio, is the measure of following."""
    var = {v.name: v for v in pipe.card.conditioning.variables}
    pop = _population(pipe.card, p_wmh=0.0, p_tumour=1.0)
    requested, generated = [], []
    for i in range(n):
        fractions = pop.subject(HELD_OUT_START + i).lesion_fractions
        request = {k: float(min(fractions[k], var[k].range[1])) for k in TUMOUR_NAMES if fractions[k] > 0}
        result = pipe.generate(seed=10_000 + i, steps=steps, guidance=guidance, **request)
        requested.append([request.get(k, 0.0) for k in TUMOUR_NAMES])
        generated.append([result.provenance["lesions"][k]["fraction"] for k in TUMOUR_NAMES])
        log(
            f"  tumour amounts, sample {i + 1}/{n}: "
            + ", ".join(f"{k} {g:.4f}" for k, g in zip(TUMOUR_NAMES, generated[-1]))
        )
    req, gen = np.asarray(requested), np.asarray(generated)
    classes = {}
    for j, k in enumerate(TUMOUR_NAMES):
        asked = req[:, j] > 0
        classes[k] = {
            "requested": int(asked.sum()),
            "log_pearson_r": pearson(np.log(req[asked, j]), np.log(np.maximum(gen[asked, j], 1e-5)))
            if asked.sum() > 2
            else float("nan"),
            "median_ratio_generated_to_requested": median_ratio(gen[:, j], req[:, j]),
        }
    return {"samples": n, "guidance": guidance, "classes": classes, "requested": requested, "generated": generated}


def evaluate_label_generator(
    pipe,
    n: int = 32,
    steps: int | None = None,
    log: Log = print,
    guidance: float | None = None,
    guidance_table: tuple[float, ...] = GUIDANCE_TABLE,
) -> tuple[dict[str, Any], list[np.ndarray], dict[str, np.ndarray]]:
    """Lesion control at every scale of ``guidance_table`` (models trained for guidance); the main
    report is at ``guidance`` (default the card's). Returns (report, montage volumes, figures)."""
    main, scales = _guidance_scales(pipe, guidance, guidance_table)
    cases = _label_cases(pipe.card, n)
    table, maps = [], None
    for w in scales:
        summary, generated = label_control(pipe, cases, steps, w, log)
        table.append(summary)
        if w == main:
            maps = generated
    chosen = next(t for t in table if t["guidance"] == main)
    per = max(1, n // 4)
    typical = {k: v for k, v in chosen["rows"][-1]["requested"].items()}
    report: dict[str, Any] = {
        "samples": n,
        **chosen["sampling"],
        **{k: v for k, v in chosen.items() if k not in ("rows", "sampling")},
        "wmh_requested_vs_generated": [
            [round(r["requested"]["wmh"], 4), round(r["fraction"]["wmh"], 4)]
            for r in chosen["rows"]
            if r["case"] == "wmh"
        ],
        "tumour_mean_fractions_requested_vs_generated": {
            k: [typical[k], float(np.mean([r["fraction"][k] for r in chosen["rows"] if r["case"] == "tumour"]))]
            for k in TUMOUR_NAMES
        },
        "guidance_table": [{k: v for k, v in t.items() if k != "rows"} for t in table],
        "tumour_amounts": tumour_amounts(pipe, per, steps, main, log),
        "rows": chosen["rows"],
    }
    return report, [maps[i].astype(np.float32) for i in range(0, n, per)][:4], {}


def _training_fractions(card, name: str) -> list[float]:
    """Non-zero training fractions recorded in the card's source (typical requests)."""
    stats = card.source.get("phantoms", {}).get("lesion_fraction_medians", {})
    value = stats.get(name)
    return [value] if value else []


# ----------------------------------------------------------------------------------------------
def _blob(shape, centre, radius_vox, rng) -> np.ndarray:
    """A smooth, slightly irregular ellipsoid mask."""
    grid = np.indices(shape).astype(np.float32)
    axes = radius_vox * rng.uniform(0.7, 1.3, size=3)
    d = sum(((grid[a] - centre[a]) / axes[a]) ** 2 for a in range(3))
    return d <= 1.0


def flair_search_region(labels: np.ndarray, wm: int, wmh: int) -> np.ndarray:
    """Where FLAIR hyperintensities are looked for: white matter and its lesions, one voxel in from
    the border. Not the whole brain: grey matter is brighter than white matter on FLAIR (on the
    phantoms as in patients), so a whole-brain threshold found the cortex (Dice 0.005 for the
    phantom renderer's own noise-free image of the same label map)."""
    from scipy import ndimage as ndi

    return ndi.binary_erosion(np.isin(labels, (wm, wmh)), iterations=1)


def evaluate_label_to_image(
    pipe, n: int = 32, steps: int | None = None, log: Log = print, guidance: float | None = None
) -> tuple[dict[str, Any], list[np.ndarray], dict[str, np.ndarray]]:
    """Paint a WMH into held-out healthy phantoms and render every sequence; ``steps`` only for SPADE
    latent-diffusion cards (the SPADE generator is one network pass)."""
    card = pipe.card
    sampling = {"steps": steps} if steps is not None and card.sampling is not None else {}
    pop = _population(card)
    names = card.label_names
    wm, gm, csf, wmh = names.index("wm"), names.index("gm"), names.index("csf"), names.index("wmh")
    rng = np.random.default_rng(0)
    dices, orderings, corr = [], {s: [] for s in card.sequences.names}, {s: [] for s in card.sequences.names}
    examples = []
    start = time.time()
    for i in range(n):
        spec = pop.sample_spec(HELD_OUT_START + i)
        healthy = pop.make(
            SubjectSpec(
                age=spec.age,
                sex=spec.sex,
                deformation_seed=spec.deformation_seed,
                head_scale=spec.head_scale,
                ventricle_z=spec.ventricle_z,
                atrophy_z=spec.atrophy_z,
            )
        )
        labels = healthy.labels
        # paint a lesion in deep white matter
        deep_wm = ndi.binary_erosion(labels == wm, iterations=2)
        candidates = np.argwhere(deep_wm)
        centre = candidates[rng.integers(len(candidates))]
        mask = _blob(labels.shape, centre, rng.uniform(2.0, 4.0), rng) & (labels == wm)
        painted = paint_lesion(labels, mask, "wmh")
        seq_results = {}
        for s_i, seq in enumerate(card.sequences.names):
            image = pipe.generate(painted, affine=healthy.affine, sequence=seq, seed=i, **sampling).image
            seq_results[seq] = image
            reference = render_contrast(painted, seq, None, spacing_mm=float(card.output.spacing[0]))
            brain = painted > 0
            corr[seq].append(pearson(image[brain], reference[brain]))
            means = {
                k: float(image[painted == idx].mean())
                for k, idx in (("csf", csf), ("gm", gm), ("wm", wm), ("wmh", wmh))
            }
            orderings[seq].append(means)
        flair = seq_results.get("FLAIR")
        if flair is not None:
            normal_wm = ndi.binary_erosion((painted == wm), iterations=1)
            mu, sd = float(flair[normal_wm].mean()), float(flair[normal_wm].std())
            detected = (flair > mu + 3.0 * sd) & flair_search_region(painted, wm, wmh)
            dices.append(dice(detected, mask))
        if i < 2:
            examples += [painted.astype(np.float32)] + [seq_results[s] for s in card.sequences.names]
        log(
            f"  case {i + 1}/{n}: lesion {int(mask.sum())} voxels, FLAIR Dice "
            f"{dices[-1] if dices else float('nan'):.3f}"
        )
    expected = {"T1": ("csf", "gm", "wm"), "FLAIR": ("csf", "wm", "wmh"), "T2": ("wm", "gm", "csf")}
    order_report = {}
    for seq, rows in orderings.items():
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("csf", "gm", "wm", "wmh")}
        chain = expected.get(seq)
        ok_rate = float(np.mean([all(r[a] < r[b] for a, b in zip(chain, chain[1:])) for r in rows])) if chain else None
        order_report[seq] = {
            "mean_intensity": mean,
            "expected_increasing": list(chain) if chain else None,
            "ordering_correct_rate": ok_rate,
        }
    report = {
        "cases": n,
        "flair_lesion_dice_mean": float(np.mean(dices)) if dices else None,
        "flair_lesion_dice_min": float(np.min(dices)) if dices else None,
        "flair_lesion_dice": [round(d, 3) for d in dices],
        "flair_threshold_rule": (
            "FLAIR > mean + 3 sd of normal-appearing white matter, inside white matter (wm or wmh labels, eroded "
            "by 1 voxel)"
        ),
        "tissue_ordering": order_report,
        "pearson_r_with_phantom_renderer": {s: float(np.mean(v)) for s, v in corr.items()},
        "seconds_per_image": (time.time() - start) / (n * len(card.sequences.names)),
    }
    return report, examples, {}
