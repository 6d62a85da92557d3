"""Lesions painted into a phantom's tissue channels on the output grid: white-matter
hyperintensities and tumours (necrotic core, enhancing rim, edema)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from .fields import smooth_random_field, smoothstep
from .specs import SubjectSpec, TumourSpec


def paint_wmh(ch: dict, spec: SubjectSpec, rng: np.random.Generator, P: np.ndarray, Q2: np.ndarray, h: float):
    """White-matter hyperintensities: periventricular caps/rims + deep blobs, volume ~ wmh_load x brain."""
    shape = ch["wm"].shape
    vent = ch["csf_vent"] >= 0.4
    if not vent.any():
        vent = ch["csf_vent"] >= ch["csf_vent"].max() * 0.5
    d_v = ndi.distance_transform_edt(~vent).astype(np.float32) * h
    y = P[1]
    vy = y[vent]
    y_front, y_back = float(vy.max()), float(vy.min())
    caps = np.exp(-(((y - (y_front - 6.0)) / 12.0) ** 2)) + 0.8 * np.exp(-(((y - (y_back + 8.0)) / 14.0) ** 2))
    peri = np.exp(-d_v / 5.0) * (0.5 + caps)
    noise = np.exp(0.45 * smooth_random_field(rng, shape, h, 15.0, 1)[0])
    wm = ch["wm"]
    # deep blobs in cerebral white matter (template z > -15 mm)
    deep = np.zeros(shape, np.float32)
    cand = np.argwhere((wm > 0.8) & (d_v > 7.0) & (d_v < 35.0) & (Q2[2] > -15.0))
    n_blobs = int(3 + rng.poisson(200.0 * spec.wmh_load))
    if len(cand):
        picks = cand[rng.integers(0, len(cand), n_blobs)]
        radii = rng.uniform(2.0, 6.0, n_blobs)
        amps = rng.uniform(0.3, 0.9, n_blobs)
        grid = np.indices(shape, dtype=np.float32)
        for (i, j, k), r, a in zip(picks, radii, amps):
            rr = int(math.ceil(3 * r / h))
            sl = tuple(slice(max(c - rr, 0), min(c + rr + 1, s)) for c, s in zip((i, j, k), shape))
            d2 = ((grid[0][sl] - i) ** 2 + (grid[1][sl] - j) ** 2 + (grid[2][sl] - k) ** 2) * h * h
            deep[sl] += a * np.exp(-d2 / (2 * r * r))
    score = (peri + deep) * noise
    score = np.where((wm > 0.15) & (Q2[2] > -25.0), score, 0.0).astype(np.float32)
    brain = sum(ch[k] for k in ("gm", "wm", "dgm", "bs", "wmh", "tumour", "edema", "gd"))
    target = spec.wmh_load * float(brain.sum(dtype=np.float64))
    cand_idx = np.flatnonzero(score > 0)
    sc = np.log(score.ravel()[cand_idx] + 1e-9)
    wmv = wm.ravel()[cand_idx]
    if wmv.sum() <= target:
        frac_c = np.ones_like(sc)
    else:
        lo_t, hi_t = float(sc.min()) - 1.0, float(sc.max()) + 1.0
        for _ in range(40):
            mid = 0.5 * (lo_t + hi_t)
            vol = float((wmv * smoothstep((sc - mid) / 0.5 + 0.5)).sum(dtype=np.float64))
            if vol > target:
                lo_t = mid
            else:
                hi_t = mid
        frac_c = smoothstep((sc - 0.5 * (lo_t + hi_t)) / 0.5 + 0.5)
    frac = np.zeros(wm.size, np.float32)
    frac[cand_idx] = frac_c
    take = wm * frac.reshape(shape)
    ch["wm"] = wm - take
    ch["wmh"] = ch["wmh"] + take


def paint_tumour(ch: dict, tum: TumourSpec, rng: np.random.Generator, Q2: np.ndarray, s: float, h: float):
    """Tumour: necrotic core ("tumour"), enhancing rim ("gdtumour"), edema in white matter."""
    shape = ch["wm"].shape
    c = np.asarray(tum.centre_mm, np.float32).reshape(3, 1, 1, 1)
    r = np.sqrt(((Q2 - c) ** 2).sum(0)) * s  # subject mm
    n1, n2 = smooth_random_field(rng, shape, h, 14.0, 2)
    # centre the shape noise on the tumour so that irregularity changes the shape, not the size
    near = r < 1.2 * tum.radius_mm
    if near.any():
        n1 = n1 - float(n1[near].mean())
    near_e = r < tum.radius_mm + tum.edema_mm
    if near_e.any():
        n2 = n2 - float(n2[near_e].mean())
    r_eff = r / np.clip(1.0 + tum.irregularity * n1, 0.5, 1.6)
    solid = smoothstep((tum.radius_mm - r_eff) / h + 0.5)
    if tum.enhancing:
        core = smoothstep((tum.necrotic_fraction * tum.radius_mm - r_eff) / h + 0.5)
    else:
        core = solid
    # the solid tumour fills its volume (it has pushed the surroundings away, see the mass effect)
    replaced = ("gm", "wm", "dgm", "bs", "wmh", "csf_ext", "csf_vent")
    moved = np.zeros(shape, np.float32)
    for k in replaced:
        take = ch[k] * solid
        ch[k] = ch[k] - take
        moved += take
    core_share = np.where(solid > 1e-6, np.minimum(core / np.maximum(solid, 1e-6), 1.0), 0.0)
    ch["tumour"] = ch["tumour"] + moved * core_share
    ch["gd"] = ch["gd"] + moved * (1.0 - core_share)
    if tum.edema_mm > 0:
        r_e = r / np.clip(1.0 + 0.5 * n2, 0.4, 2.0)
        ed = smoothstep((tum.radius_mm + tum.edema_mm - r_e) / (2 * h) + 0.5) * (1.0 - solid)
        for k in ("wm", "wmh"):
            take = ch[k] * ed
            ch[k] = ch[k] - take
            ch["edema"] = ch["edema"] + take
