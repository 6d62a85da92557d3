"""What each model kind is checked for, measured on held-out phantoms (``synthbrain evaluate``).

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

from ...outputs.measure import measure_brain_volume_ml, measure_ventricular_volume_ml
from ..phantoms import PhantomPopulation, SubjectSpec
from ..phantoms.contrast import render_contrast
from ..phantoms.labels import paint_lesion
from .metrics import dice, is_monotonic_increasing, ms_ssim_pairs, pearson, spearman

HELD_OUT_START = 100_000
Log = Callable[[str], None]


def _population(card):

    shape = tuple(card.output.shape)
    spacing = float(card.output.spacing[0])
    return PhantomPopulation(seed=0, spacing_mm=spacing, shape=shape)


# ----------------------------------------------------------------------------------------------
def evaluate_conditional_brain(
    pipe, n: int = 32, steps: int | None = None, log: Log = print
) -> tuple[dict[str, Any], list[np.ndarray]]:

    card = pipe.card
    pop = _population(card)
    var = {v.name: v for v in card.conditioning.variables}
    rows = []
    generated, phantoms = [], []
    start = time.time()
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
        t = time.time()
        result = pipe.generate(seed=i, steps=steps, **req)
        seconds = time.time() - t
        generated.append(result.image)
        phantoms.append(subject.images["T1"])
        rows.append(
            {
                **req,
                "true_ventricular_volume": subject.true_ventricular_volume_ml,
                "measured_ventricular_volume": measure_ventricular_volume_ml(result.image, result.affine),
                "measured_brain_volume": measure_brain_volume_ml(result.image, result.affine),
                "seconds": seconds,
            }
        )
        log(
            f"  sample {i + 1}/{n}: requested ventricles {req['ventricular_volume']:.1f} mL -> measured "
            f"{rows[-1]['measured_ventricular_volume']:.1f} mL"
        )
    col = lambda k: np.array([r[k] for r in rows], np.float64)  # noqa: E731
    report: dict[str, Any] = {
        "samples": n,
        "steps": steps or card.sampling.default_steps,
        "sampler": card.sampling.default_sampler,
        "seconds_per_sample": float(col("seconds").mean()),
        "ventricular_volume": {
            "pearson_r_requested_vs_measured": pearson(col("ventricular_volume"), col("measured_ventricular_volume")),
            "mean_abs_error_ml": float(np.abs(col("ventricular_volume") - col("measured_ventricular_volume")).mean()),
            "ceiling_r_measured_vs_true_on_phantoms": pearson(
                col("ventricular_volume"), col("true_ventricular_volume")
            ),
            "requested_range_ml": [float(col("ventricular_volume").min()), float(col("ventricular_volume").max())],
        },
        "brain_volume": {
            "pearson_r_requested_vs_measured": pearson(col("brain_volume"), col("measured_brain_volume")),
            "mean_abs_error_ml": float(np.abs(col("brain_volume") - col("measured_brain_volume")).mean()),
        },
        "rows": rows,
    }
    # Age sweeps, one seed: (a) only age changes; (b) volumes follow the phantoms' age trend.
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
                image = pipe.generate(seed=1000 + seed, steps=steps, **kwargs).image
                per_seed.append(measure_ventricular_volume_ml(image, card.output.affine))
            measured.append(per_seed)
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
    report["age_sweeps"] = sweeps
    mean_gen, sd_gen = ms_ssim_pairs(generated)
    mean_ph, sd_ph = ms_ssim_pairs(phantoms)
    report["diversity"] = {
        "ms_ssim_between_samples": mean_gen,
        "ms_ssim_between_samples_sd": sd_gen,
        "ms_ssim_between_phantoms": mean_ph,
        "ms_ssim_between_phantoms_sd": sd_ph,
    }
    report["seconds_total"] = time.time() - start
    return report, generated[:3] + phantoms[:1]


# ----------------------------------------------------------------------------------------------
LESIONS = ("wmh", "tumour", "edema", "gdtumour")


def evaluate_label_generator(
    pipe, n: int = 32, steps: int | None = None, log: Log = print
) -> tuple[dict[str, Any], list[np.ndarray]]:
    card = pipe.card
    var = {v.name: v for v in card.conditioning.variables}
    typical = {
        name: float(np.median([r for r in _training_fractions(card, name)] or [var[name].range[1] / 2]))
        for name in LESIONS
    }
    rng = np.random.default_rng(0)
    cases = []
    per = max(1, n // 4)
    cases += [("none", {}) for _ in range(per)]
    cases += [("wmh", {"wmh": float(rng.uniform(0.25, 1.0) * var["wmh"].range[1])}) for _ in range(per)]
    cases += [("tumour", {k: typical[k] for k in ("tumour", "edema", "gdtumour")}) for _ in range(per)]
    cases += [
        ("both", {"wmh": typical["wmh"], **{k: typical[k] for k in ("tumour", "edema", "gdtumour")}})
        for _ in range(n - 3 * per)
    ]
    rows, label_maps = [], []
    start = time.time()
    for i, (kind, request) in enumerate(cases):
        result = pipe.generate(seed=i, steps=steps, **request)
        lesions = result.provenance["lesions"]
        rows.append(
            {
                "case": kind,
                "requested": {k: request.get(k, 0.0) for k in LESIONS},
                "fraction": {k: lesions[k]["fraction"] for k in LESIONS},
                "present": {k: lesions[k]["present"] for k in LESIONS},
            }
        )
        if i % per == 0:
            label_maps.append(result.labels.astype(np.float32))
        log(f"  sample {i + 1}/{n} ({kind}): " + ", ".join(f"{k} {lesions[k]['fraction']:.4f}" for k in LESIONS))
    report: dict[str, Any] = {"samples": n, "steps": steps or card.sampling.default_steps, "rows": rows}
    requested_present, unrequested_absent = [], []
    for r in rows:
        for k in LESIONS:
            (requested_present if r["requested"][k] > 0 else unrequested_absent).append(
                r["present"][k] if r["requested"][k] > 0 else not r["present"][k]
            )
    # "absent" allows a few stray voxels: fraction below 0.1 % of the brain
    tiny = 1e-3
    report["requested_present_rate"] = float(np.mean(requested_present))
    report["unrequested_absent_rate"] = float(np.mean(unrequested_absent))
    report["unrequested_below_0.1pct_rate"] = float(
        np.mean([r["fraction"][k] < tiny for r in rows for k in LESIONS if r["requested"][k] == 0])
    )
    report["no_lesion_when_none_requested_rate"] = float(
        np.mean([all(r["fraction"][k] < tiny for k in LESIONS) for r in rows if r["case"] == "none"])
    )
    wmh_rows = [r for r in rows if r["case"] == "wmh"]
    report["wmh_pearson_r_requested_vs_generated"] = pearson(
        [r["requested"]["wmh"] for r in wmh_rows], [r["fraction"]["wmh"] for r in wmh_rows]
    )
    report["wmh_requested_vs_generated"] = [
        [round(r["requested"]["wmh"], 4), round(r["fraction"]["wmh"], 4)] for r in wmh_rows
    ]
    report["tumour_mean_fractions_requested_vs_generated"] = {
        k: [typical[k], float(np.mean([r["fraction"][k] for r in rows if r["case"] == "tumour"]))]
        for k in ("tumour", "edema", "gdtumour")
    }
    report["seconds_per_sample"] = (time.time() - start) / n
    return report, label_maps


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
    pipe, n: int = 32, steps: int | None = None, log: Log = print
) -> tuple[dict[str, Any], list[np.ndarray]]:
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
    return report, examples
