"""Preparation of the MNI ICBM152 2009a template maps that every phantom is sampled from.

The template ships inside the nilearn wheel (``nilearn.datasets.load_mni152_*``, 197x233x189 voxels
at 1 mm, RAS, MNI mm coordinates). Its licence notice is in ``NOTICE_MNI152.txt`` next to this file.

:func:`prepare_template` derives, once per process and anti-aliasing width, seven partial-volume
channels on the (cropped, background-padded) 1 mm template grid, in the order of
:data:`TEMPLATE_CHANNELS`:

* ``background`` = 1 - brain mask;
* ``csf_ext``, ``csf_vent``: CSF = brain mask - GM - WM, split into ventricular CSF (lateral and
  third ventricles, found as the central CSF components) and the rest (sulci, fissures, cisterns,
  fourth ventricle);
* ``gm`` (cortical and cerebellar grey matter), ``wm`` (cerebral and cerebellar white matter);
* ``dgm``: grey matter of a central box (thalamus, caudate, putamen, pallidum) at least a few mm
  away from the external CSF (which removes insular and cingulate cortex);
* ``brainstem``: all tissue inside a tapered, posteriorly tilted cylinder along the midbrain, pons
  and medulla, below the thalamus.

It also prepares a map of sulcal-CSF proximity (for sulcal widening), the ventricle-expansion
velocity field (a smooth field pointing away from the ventricles), its pull-back flow map
tabulated for flow times -5..18 mm with the matching ventricle-volume calibration (used by the age
model, :func:`flow_ventricles`), and candidate tumour centres. All coordinates are MNI mm (RAS).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .fields import smoothstep, trilinear_gather

TEMPLATE_CHANNELS = ("background", "csf_ext", "csf_vent", "gm", "wm", "dgm", "brainstem")
T_BG, T_CSF_EXT, T_CSF_VENT, T_GM, T_WM, T_DGM, T_BS = range(7)
T_SULCAL = 7  # extra (non partial-volume) channel of PreparedTemplate.maps

#: Flow times (mm) at which the ventricle flow map is tabulated; subjects interpolate between them.
FLOW_TAUS = np.arange(-5.0, 19.0, 1.0)
_FLOW_STEP_MM = 1.0  # Euler step (mm of flow time) used to tabulate the flow
_FLOW_GRID_MM = 2.0

#: Seeds (MNI mm) inside the lateral-ventricle bodies of the template.
LATERAL_VENTRICLE_SEEDS_MM = ((-10.0, -5.0, 20.0), (10.0, -5.0, 20.0), (-10.0, -20.0, 20.0), (10.0, -20.0, 20.0))

#: Third-ventricle box (MNI mm): |x| <= 5, y in [-24, 4], z in [-6, 16].
THIRD_VENTRICLE_BOX_MM = ((-5.0, 5.0), (-24.0, 4.0), (-6.0, 16.0))

# Brainstem centre line: rows (z, y_centre, half-width anterior-posterior, half-width left-right), mm.
BRAINSTEM_PROFILE_MM = np.array(
    [
        [0.0, -24.0, 10.0, 13.0],
        [-8.0, -23.0, 11.0, 14.0],
        [-18.0, -22.0, 13.0, 15.0],
        [-30.0, -24.0, 13.5, 15.0],
        [-42.0, -30.0, 10.0, 11.0],
        [-55.0, -37.0, 8.0, 9.0],
        [-80.0, -45.0, 8.0, 8.5],
    ]
)

_PAD = 6  # background voxels added around the cropped brain
_VEL_STEP = 2  # velocity field grid: every 2nd template voxel (2 mm)


@dataclass
class PreparedTemplate:
    """Template maps ready for sampling (all arrays float32, channel-last).

    Attributes:
        maps: (X, Y, Z, 8): channels 0..6 are partial volumes in :data:`TEMPLATE_CHANNELS` order
            (summing to 1); channel 7 (:data:`T_SULCAL`) is the sulcal-CSF proximity in [0, 1]
            (external CSF blurred with a 2 mm Gaussian, x2, clipped), used for sulcal widening.
            Outside the array everything is background (the crop has a background margin).
        mm_to_vox: 4x4, MNI mm -> voxel index of ``maps``.
        vox_to_mm: inverse of ``mm_to_vox``.
        velocity: (Xv, Yv, Zv, 3) ventricle-expansion velocity (mm per unit flow time; |v| ~ 1 at
            the ventricle walls, pointing away from the ventricles) on a 2 mm grid.
        vel_mm_to_vox: 4x4, MNI mm -> voxel index of ``velocity``.
        flow_taus: (K,) flow times at which the pull-back flow map is tabulated.
        flow_disp: (K, Xf, Yf, Zf, 3) pull-back displacement (mm) after flow time ``flow_taus[k]``
            of the points of the flow grid (2 mm, covering where the velocity is non-zero).
        flow_mm_to_vox: 4x4, MNI mm -> voxel index of ``flow_disp``.
        brain_centre_mm: (3,) centre of the brain-mask bounding box (MNI mm).
        ventricle_volume_ml: ventricular CSF volume of the template (soft, mL, MNI size).
        brain_volume_ml: tissue volume of the template (mL, MNI size).
        tumour_candidates_mm: (N, 3) plausible tumour centres (cerebral white matter, >= 15 mm deep,
            >= 6 mm from the ventricles).
        sigma_mm: Gaussian anti-aliasing width applied to the 1 mm maps.
        ventricle_calibration: (taus, volumes_ml): template ventricle volume (MNI size) after a
            uniform flow of time tau (:func:`flow_ventricles`), non-decreasing in tau.
    """

    maps: np.ndarray
    mm_to_vox: np.ndarray
    vox_to_mm: np.ndarray
    velocity: np.ndarray
    vel_mm_to_vox: np.ndarray
    flow_taus: np.ndarray
    flow_disp: np.ndarray
    flow_mm_to_vox: np.ndarray
    brain_centre_mm: np.ndarray
    ventricle_volume_ml: float
    brain_volume_ml: float
    tumour_candidates_mm: np.ndarray
    sigma_mm: float
    ventricle_calibration: tuple = None

    @property
    def channels(self) -> np.ndarray:
        """(X, Y, Z, 7) view of the partial-volume channels of :attr:`maps`."""
        return self.maps[..., :T_SULCAL]


_CACHE: dict = {}
_LOCK = threading.Lock()


def antialias_sigma_mm(spacing_mm: float) -> float:
    """Gaussian width (mm) applied to the 1 mm maps before trilinear sampling at ``spacing_mm``.

    Chosen so that the 1 mm box plus the Gaussian approximate a box of the output voxel size:
    ``sigma = sqrt(spacing^2 - 1) / sqrt(12)`` (0 at 1 mm), rounded to 0.05 mm for caching.
    """
    s = float(np.sqrt(max(spacing_mm**2 - 1.0, 0.0)) / np.sqrt(12.0))
    return round(s / 0.05) * 0.05


_NILEARN_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def load_mni152_maps():
    """Load (gm, wm, brain mask, affine) of the nilearn MNI152 2009a template at 1 mm.

    Returns float32 arrays (197, 233, 189) and the 4x4 float64 voxel -> MNI mm affine, exactly as
    ``nilearn.datasets.load_mni152_{gm,wm}_template`` / ``load_mni152_brain_mask`` (resolution 1)
    give them: maps divided by their maximum, mask = T1 / max(T1) > 0.2. The files are read from
    the nilearn package with nibabel (importing nilearn.datasets takes ~1.5 s); if they are not
    where expected, nilearn's loaders are used. Offline.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("nilearn")
    data_dir = Path(spec.origin).parent / "datasets" / "data" if spec and spec.origin else None
    if data_dir is not None and all((data_dir / f).exists() for f in _NILEARN_FILES.values()):
        import nibabel as nib

        imgs = {k: nib.load(str(data_dir / f)) for k, f in _NILEARN_FILES.items()}
        arr = {}
        for k, img in imgs.items():
            a = np.asarray(img.dataobj, dtype=np.float32)
            arr[k] = a / a.max()
        mask = (arr["t1"] > 0.2).astype(np.float32)
        return arr["gm"], arr["wm"], mask, np.asarray(imgs["t1"].affine, np.float64)
    from nilearn import datasets

    mask_img = datasets.load_mni152_brain_mask(resolution=1)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32))
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32))
    mask = np.asarray(mask_img.get_fdata(dtype=np.float32))
    return gm, wm, mask, np.asarray(mask_img.affine, np.float64)


def _interp_profile(z: np.ndarray, col: int) -> np.ndarray:
    prof = BRAINSTEM_PROFILE_MM[::-1]  # increasing z for np.interp
    return np.interp(z, prof[:, 0], prof[:, col]).astype(np.float32)


def _smooth_box(coord: np.ndarray, lo: float, hi: float, ramp: float) -> np.ndarray:
    """1 inside [lo, hi], ramping smoothly to 0 over ``ramp`` mm outside."""
    return smoothstep((coord - (lo - ramp)) / ramp) * smoothstep(((hi + ramp) - coord) / ramp)


def build_template(sigma_mm: float) -> PreparedTemplate:
    """Build the :class:`PreparedTemplate` (~5 s; use :func:`prepare_template`, which caches)."""

    gm, wm, mask, affine = load_mni152_maps()
    m = mask > 0.5
    gm = gm * m
    wm = wm * m
    # tissue never exceeds the mask
    tot = gm + wm
    over = tot > 1.0
    gm[over] /= tot[over]
    wm[over] /= tot[over]

    # crop to the brain bounding box + background padding
    idx = np.argwhere(m)
    lo, hi = idx.min(0), idx.max(0) + 1
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    gm, wm, m = gm[sl], wm[sl], m[sl]
    gm = np.pad(gm, _PAD)
    wm = np.pad(wm, _PAD)
    m = np.pad(m, _PAD)
    vox_to_mm = affine.copy()
    vox_to_mm[:3, 3] = affine[:3, 3] + affine[:3, :3] @ (lo - _PAD)
    mm_to_vox = np.linalg.inv(vox_to_mm)
    shape = m.shape

    # MNI coordinates of every voxel (axis-aligned affine: 1-D coordinate vectors suffice)
    diag = np.diag(vox_to_mm)[:3]
    xs = (vox_to_mm[0, 3] + diag[0] * np.arange(shape[0])).astype(np.float32)
    ys = (vox_to_mm[1, 3] + diag[1] * np.arange(shape[1])).astype(np.float32)
    zs = (vox_to_mm[2, 3] + diag[2] * np.arange(shape[2])).astype(np.float32)
    X = xs[:, None, None]
    Y = ys[None, :, None]
    Z = zs[None, None, :]

    def vox(p):
        return tuple(np.round(mm_to_vox[:3, :3] @ np.asarray(p) + mm_to_vox[:3, 3]).astype(int))

    csf = np.clip(m.astype(np.float32) - gm - wm, 0.0, 1.0)
    dist_mask = ndi.distance_transform_edt(m).astype(np.float32)

    # --- ventricles: lateral (seeded central CSF components) + third (midline box)
    cand = (csf > 0.5) & (dist_mask > 4)
    lab, _ = ndi.label(cand)
    seeds = {lab[vox(p)] for p in LATERAL_VENTRICLE_SEEDS_MM} - {0}
    if not seeds:
        raise RuntimeError("could not find the lateral ventricles in the MNI template")
    lat = np.isin(lab, sorted(seeds))
    grow_into = (csf > 0.3) & (dist_mask > 3)
    lat = ndi.binary_dilation(lat, iterations=2, mask=grow_into)
    (bx, by, bz) = THIRD_VENTRICLE_BOX_MM
    box3 = (X >= bx[0]) & (X <= bx[1]) & (Y >= by[0]) & (Y <= by[1]) & (Z >= bz[0]) & (Z <= bz[1])
    third = box3 & (csf > 0.35)
    vent = lat | third
    # include the partial-volume rim (one voxel), softly
    vent_w = np.clip(ndi.gaussian_filter(ndi.binary_dilation(vent).astype(np.float32), 0.6) * 1.5, 0, 1)
    vent_w = np.maximum(vent_w, vent)
    csf_vent = csf * vent_w
    csf_ext = csf - csf_vent

    # --- brainstem: tapered cylinder along the stem, below the diencephalon
    yc = _interp_profile(Z, 1)
    rap = _interp_profile(Z, 2)
    rlr = _interp_profile(Z, 3)
    rho = np.sqrt((X / rlr) ** 2 + ((Y - yc) / rap) ** 2)
    w_bs = smoothstep((1.1 - rho) / 0.25) * smoothstep((-1.0 - Z) / 5.0)
    tissue = gm + wm
    brainstem = tissue * w_bs
    gm = gm * (1.0 - w_bs)
    wm = wm * (1.0 - w_bs)

    # --- deep grey matter: grey matter in a central box, away from external CSF / outside
    outer = (csf_ext + (1.0 - m)) > 0.5
    dist_outer = ndi.distance_transform_edt(~outer).astype(np.float32)
    ax = np.abs(X)
    region = (
        _smooth_box(ax, 0.0, 31.0, 2.0)
        * _smooth_box(Y, -40.0, 28.0, 3.0)
        * _smooth_box(Z, -10.0, 26.0, 3.0)
        # posterior-lateral (hippocampal tail) excluded
        * (1.0 - smoothstep((ax - 22.0) / 3.0) * smoothstep((-24.0 - Y) / 3.0))
    )
    w_dgm = region * smoothstep((dist_outer - 2.0) / 3.0)
    dgm = gm * w_dgm
    gm = gm - dgm

    bg = 1.0 - m.astype(np.float32)
    ch = np.stack([bg, csf_ext, csf_vent, gm, wm, dgm, brainstem], axis=-1).astype(np.float32)

    # raw volumes (MNI size, mL), before anti-aliasing
    brain_volume_ml = float((gm + wm + dgm + brainstem).sum()) / 1000.0
    ventricle_volume_ml = float(csf_vent.sum()) / 1000.0

    if sigma_mm > 0:
        for c in range(ch.shape[-1]):
            ch[..., c] = ndi.gaussian_filter(ch[..., c], sigma_mm, mode="nearest")
        ch /= ch.sum(-1, keepdims=True)

    sulcal = np.clip(ndi.gaussian_filter(csf_ext, 2.0) * 2.0, 0.0, 1.0)
    maps = np.concatenate([ch, sulcal[..., None].astype(np.float32)], axis=-1)
    del ch, bg

    # --- ventricle expansion velocity: gradient of the blurred ventricle indicator (2 mm grid)
    vsoft = vent.astype(np.float32)
    phi = ndi.gaussian_filter(vsoft, 5.0) + 0.5 * ndi.gaussian_filter(vsoft, 10.0)
    grads = np.stack(np.gradient(phi), axis=-1)  # per mm (1 mm voxels)
    gmag = np.linalg.norm(grads, axis=-1)
    rim = ndi.binary_dilation(vent) & ~ndi.binary_erosion(vent)
    norm = float(np.percentile(gmag[rim], 75))
    vel = -grads / norm  # outward: away from the ventricles
    del grads, gmag, phi
    vmag = np.linalg.norm(vel, axis=-1, keepdims=True)
    vel = vel * np.minimum(1.0, 1.5 / np.maximum(vmag, 1e-6))
    vel = np.ascontiguousarray(vel[::_VEL_STEP, ::_VEL_STEP, ::_VEL_STEP], dtype=np.float32)
    vel_mm_to_vox = np.diag([1.0 / _VEL_STEP] * 3 + [1.0]) @ mm_to_vox

    # --- tumour candidates: deep cerebral white matter, away from ventricles and brainstem
    dist_vent = ndi.distance_transform_edt(~vent).astype(np.float32)
    cand = (wm > 0.7) & (dist_mask > 15) & (dist_vent > 6) & (Z > -20) & (w_bs < 0.01) & (Y > -90)
    cidx = np.argwhere(cand)[::97]
    cand_mm = (vox_to_mm[:3, :3] @ cidx.T + vox_to_mm[:3, 3:4]).T.astype(np.float32)

    bb = np.argwhere(m)
    centre_vox = (bb.min(0) + bb.max(0)) / 2.0
    centre_mm = vox_to_mm[:3, :3] @ centre_vox + vox_to_mm[:3, 3]

    # --- tabulated pull-back flow map on a 2 mm grid covering where the velocity is non-zero
    vb = np.argwhere(np.linalg.norm(vel, axis=-1) > 0.01)
    vinv = np.linalg.inv(vel_mm_to_vox)
    lo = vinv[:3, :3] @ vb.min(0) + vinv[:3, 3] - 12.0
    hi = vinv[:3, :3] @ vb.max(0) + vinv[:3, 3] + 12.0
    axes = [np.arange(lo[d], hi[d] + _FLOW_GRID_MM, _FLOW_GRID_MM) for d in range(3)]
    fshape = tuple(len(a) for a in axes)
    Q0 = np.stack(np.meshgrid(*axes, indexing="ij"), 0).reshape(3, -1)
    flow_mm_to_vox = np.eye(4)
    flow_mm_to_vox[:3, :3] /= _FLOW_GRID_MM
    flow_mm_to_vox[:3, 3] = -lo / _FLOW_GRID_MM
    disp = np.zeros((len(FLOW_TAUS),) + fshape + (3,), np.float32)
    M, b = vel_mm_to_vox[:3, :3], vel_mm_to_vox[:3, 3:4]
    vent_map = np.ascontiguousarray(maps[..., T_CSF_VENT : T_CSF_VENT + 1])
    vols = np.zeros(len(FLOW_TAUS))

    def _vent_volume(q):  # ventricle volume (mL) seen through the pull-back points q
        vox = mm_to_vox[:3, :3] @ q + mm_to_vox[:3, 3:4]
        return float(trilinear_gather(vent_map, vox).sum(dtype=np.float64)) * _FLOW_GRID_MM**3 / 1000.0

    vols[FLOW_TAUS == 0.0] = _vent_volume(Q0)
    for sign in (1.0, -1.0):
        ks = [k for k in np.argsort(np.abs(FLOW_TAUS)) if FLOW_TAUS[k] * sign > 0]
        q, t_prev = Q0.copy(), 0.0
        for k in ks:
            span = float(FLOW_TAUS[k]) - t_prev
            n = max(1, int(np.ceil(abs(span) / _FLOW_STEP_MM)))
            for _ in range(n):
                q -= trilinear_gather(vel, M @ q + b).T * (span / n)
            t_prev = float(FLOW_TAUS[k])
            disp[k] = (q - Q0).T.reshape(fshape + (3,))
            vols[k] = _vent_volume(q)

    T = PreparedTemplate(
        maps=np.ascontiguousarray(maps),
        mm_to_vox=mm_to_vox,
        vox_to_mm=vox_to_mm,
        velocity=vel,
        vel_mm_to_vox=vel_mm_to_vox,
        flow_taus=FLOW_TAUS.copy(),
        flow_disp=disp,
        flow_mm_to_vox=flow_mm_to_vox,
        brain_centre_mm=centre_mm,
        ventricle_volume_ml=ventricle_volume_ml,
        brain_volume_ml=brain_volume_ml,
        tumour_candidates_mm=cand_mm,
        sigma_mm=float(sigma_mm),
    )
    T.ventricle_calibration = (FLOW_TAUS.copy(), np.maximum.accumulate(vols))
    return T


def flow_ventricles(T: PreparedTemplate, Q: np.ndarray, tau: float, asym: float = 0.0, ap: float = 0.0) -> np.ndarray:
    """Pull template coordinates ``Q`` (3, N) (MNI mm) back along the ventricle velocity field.

    Sampling the template at the returned points enlarges the ventricles (tau > 0) or shrinks
    them (tau < 0): the velocity points away from the ventricles (|v| ~ 1 at their walls), so the
    walls move outward by roughly tau mm while the tissue around them is compressed; the flow of a
    smooth velocity field is a diffeomorphism (no folding). The local flow time is
    tau * (1 + asym * tanh(x / 8)) * (1 + ap * tanh((y + 17) / 20)) evaluated at the starting
    point (left/right and anterior/posterior individual variation), clipped to the tabulated
    range [-5, 18]; the displacement is interpolated trilinearly in space (2 mm grid) and linearly
    in flow time from :attr:`PreparedTemplate.flow_disp`.
    """
    if abs(tau) < 1e-9:
        return Q
    Q = np.asarray(Q, np.float64)
    M, b = T.flow_mm_to_vox[:3, :3], T.flow_mm_to_vox[:3, 3:4]
    vox = M @ Q + b
    fshape = np.array(T.flow_disp.shape[1:4])
    sel = np.flatnonzero(np.all((vox >= 0) & (vox <= (fshape - 1)[:, None]), axis=0))
    out = Q.copy()
    if sel.size == 0:
        return out
    qs = Q[:, sel]
    t_loc = tau * (1.0 + asym * np.tanh(qs[0] / 8.0)) * (1.0 + ap * np.tanh((qs[1] + 17.0) / 20.0))
    taus = T.flow_taus
    t_loc = np.clip(t_loc, taus[0], taus[-1])
    k = np.clip(np.searchsorted(taus, t_loc, side="right") - 1, 0, len(taus) - 2)
    w = ((t_loc - taus[k]) / (taus[k + 1] - taus[k])).astype(np.float32)
    d = np.empty((sel.size, 3), np.float32)
    vs = vox[:, sel]
    for kk in np.unique(k):
        g = np.flatnonzero(k == kk)
        a = trilinear_gather(T.flow_disp[kk], vs[:, g])
        c = trilinear_gather(T.flow_disp[kk + 1], vs[:, g])
        d[g] = a + (c - a) * w[g, None]
    out[:, sel] = qs + d.T
    return out


def prepare_template(sigma_mm: float) -> PreparedTemplate:
    """Cached :func:`build_template` (one build per process and anti-aliasing width)."""
    key = round(float(sigma_mm), 3)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build_template(key)
        return _CACHE[key]
