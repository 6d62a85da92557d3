"""How well the image-based estimators recover the phantoms' true volumes (numbers in docs/phantoms.md).

Usage::

    python -m synthbrain_dev.phantoms.evaluate_measures --n 80 --seed 1 --spacing 2.5 --json out.json

For ``n`` subjects of a population it records the true ventricular / brain volumes, the estimates
of :mod:`.measure`, two baselines from docs/reference evaluation.md (dark voxels in a central
box; CSF fraction in the brain eroded by 20 mm), Pearson r for all subjects and for those without
a tumour, volume ranges by age band, and the time per subject (generation and measurement).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from SynthBrainLib.outputs import measure

from .population import PhantomPopulation


def dark_box_ml(t1: np.ndarray, affine: np.ndarray) -> float:
    """Naive baseline: voxels darker than 0.3 x the 99th percentile of the brain, inside the central
    third (per axis) of the bounding box of the non-zero image."""
    inside = t1 > 0
    idx = np.argwhere(inside)
    lo, hi = idx.min(0), idx.max(0) + 1
    third = (hi - lo) / 3.0
    a = (lo + third).astype(int)
    b = (hi - third).astype(int)
    box = np.zeros_like(inside)
    box[a[0] : b[0], a[1] : b[1], a[2] : b[2]] = True
    thr = 0.3 * np.percentile(t1[inside], 99)
    return float((box & inside & (t1 < thr)).sum() * measure.voxel_volume_ml(affine))


def pearson(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def evaluate(n: int = 80, seed: int = 1, spacing_mm: float = 2.5, shape=None, log=print) -> dict:
    if shape is None:
        shape = tuple(int(round(s * 2.5 / spacing_mm)) for s in (64, 80, 64))
    pop = PhantomPopulation(seed=seed, spacing_mm=spacing_mm, shape=shape)
    t0 = time.time()
    _ = pop.template
    t_template = time.time() - t0
    rows, t_gen, t_meas = [], 0.0, 0.0
    for i in range(n):
        t = time.time()
        s = pop.subject(i)
        t_gen += time.time() - t
        t = time.time()
        m = measure.measure_t1(s.images["T1"], s.affine)
        t_meas += time.time() - t
        rows.append(
            {
                "index": i,
                "age": s.spec.age,
                "sex": s.spec.sex,
                "tumour": s.spec.tumour is not None,
                "wmh_load": s.spec.wmh_load,
                "true_vent": s.true_ventricular_volume_ml,
                "true_brain": s.true_brain_volume_ml,
                "meas_vent": m["ventricular_volume_ml"],
                "meas_brain": m["brain_volume_ml"],
                "eroded20": measure.measure_deep_csf_ml(s.images["T1"], s.affine, 20.0),
                "dark_box": dark_box_ml(s.images["T1"], s.affine),
            }
        )
        if log and (i + 1) % 20 == 0:
            log(f"  {i + 1}/{n} subjects")
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    healthy = ~col["tumour"].astype(bool)
    res = {
        "n": n,
        "seed": seed,
        "spacing_mm": spacing_mm,
        "shape": list(shape),
        "template_seconds": t_template,
        "seconds_per_subject_generation": t_gen / n,
        "seconds_per_subject_measurement": t_meas / n,
        "r_ventricles": pearson(col["true_vent"], col["meas_vent"]),
        "r_ventricles_no_tumour": pearson(col["true_vent"][healthy], col["meas_vent"][healthy]),
        "r_ventricles_tumour": pearson(col["true_vent"][~healthy], col["meas_vent"][~healthy]),
        "r_brain": pearson(col["true_brain"], col["meas_brain"]),
        "r_brain_no_tumour": pearson(col["true_brain"][healthy], col["meas_brain"][healthy]),
        "r_eroded20_baseline": pearson(col["true_vent"], col["eroded20"]),
        "r_dark_box_baseline": pearson(col["true_vent"], col["dark_box"]),
        "median_ratio_ventricles": float(np.median(col["meas_vent"] / col["true_vent"])),
        "median_ratio_brain": float(np.median(col["meas_brain"] / col["true_brain"])),
        "mean_abs_error_ventricles_ml": float(np.mean(np.abs(col["meas_vent"] - col["true_vent"]))),
        "n_tumour": int((~healthy).sum()),
        "n_wmh": int((col["wmh_load"] > 0).sum()),
        "true_ventricles_range_ml": [float(col["true_vent"].min()), float(col["true_vent"].max())],
        "true_brain_range_ml": [float(col["true_brain"].min()), float(col["true_brain"].max())],
        "age_bands": [],
        "rows": rows,
    }
    for lo, hi in ((45, 55), (55, 65), (65, 75), (75, 83)):
        sel = (col["age"] >= lo) & (col["age"] < hi)
        if sel.any():
            v, b = col["true_vent"][sel], col["true_brain"][sel]
            res["age_bands"].append(
                {
                    "ages": f"{lo}-{min(hi, 82)}",
                    "n": int(sel.sum()),
                    "ventricles_median_ml": float(np.median(v)),
                    "ventricles_min_ml": float(v.min()),
                    "ventricles_max_ml": float(v.max()),
                    "brain_median_ml": float(np.median(b)),
                    "brain_min_ml": float(b.min()),
                    "brain_max_ml": float(b.max()),
                }
            )
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=80)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--spacing", type=float, default=2.5)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    res = evaluate(a.n, a.seed, a.spacing)
    summary = {k: v for k, v in res.items() if k != "rows"}
    print(json.dumps(summary, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
