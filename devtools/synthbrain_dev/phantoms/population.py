"""Deterministic phantom brain population derived from the MNI ICBM152 2009a template.

A subject is made by pulling the prepared 1 mm template maps (:mod:`.template`) back through a chain
of transforms evaluated at every voxel of the output grid, then sampling them trilinearly:

1. global transform (subject space -> template space): head size (``NATIVE_SCALE`` x 1.03 for
   males x ``head_scale``), a small random rotation (sd 2 deg), anisotropic scaling (sd 2 %) and
   translation (sd 1.5 mm), plus a smooth random displacement (cubic B-spline, ~40 mm features,
   sd 2.5 mm per axis, and a finer ~20 mm one, sd 0.8 mm);
2. tumour mass effect (optional): incompressible radial displacement around the tumour centre;
3. ventricle expansion/shrinkage: the points are flowed along a smooth velocity field pointing
   away from the ventricles for a (spatially modulated) time tau(age, individual effect); the flow
   is a diffeomorphism, so ventricles grow (or shrink) smoothly and nearby tissue is compressed
   (tissue volume falls by the ventricular gain);
4. trilinear sampling of the anti-aliased template partial volumes (7 channels).

Then, on the output grid: sulcal widening (grey matter next to sulcal CSF turns into CSF, more with
age), white-matter hyperintensities, tumour (necrotic core / enhancing rim / edema in white matter),
explicitly painted lesions, and finally the T1 / FLAIR / T2 images (:mod:`.contrast`).

All randomness comes from ``numpy.random.Generator`` streams seeded by
``(spec.deformation_seed, stream)``, so the same spec gives bit-identical arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import numpy as np

from SynthBrainLib.outputs import measure

from .contrast import SEQUENCES, render_contrast
from .fields import smooth_random_field, trilinear_gather
from .labels import (
    BACKGROUND,
    BRAINSTEM,
    CSF,
    DGM,
    GM,
    LABEL_NAMES,
    LESION_CHANNELS,
    TISSUE_CHANNELS,
    WM,
    labels_from_partial_volumes,
    paint_lesion,
)
from .lesions import paint_tumour, paint_wmh
from .specs import SubjectSpec, TumourSpec
from .template import (
    T_BG,
    T_BS,
    T_CSF_EXT,
    T_CSF_VENT,
    T_DGM,
    T_GM,
    T_SULCAL,
    T_WM,
    PreparedTemplate,
    antialias_sigma_mm,
    flow_ventricles,
    prepare_template,
)

#: Linear scale from MNI152 space to an average (45-year-old female) native brain. MNI space is
#: ~12 % larger (linear) than average adult brains; with this factor the template's tissue volume
#: (1667 mL) becomes ~1140 mL.
NATIVE_SCALE = 0.88
#: Extra linear head scale of males.
MALE_SCALE = 1.03

AGE_RANGE = (45.0, 82.0)

# Ventricular volume model: median lateral+third ventricle volume (mL, native) rises exponentially
# from VENT_MEDIAN_45 at 45 y to VENT_MEDIAN_82 at 82 y; individual log-normal spread VENT_LOG_SD.
VENT_MEDIAN_45 = 14.0
VENT_MEDIAN_82 = 48.0
VENT_LOG_SD = 0.35

# Sulcal widening: fraction k(age) of the grey matter next to sulcal CSF that turns into CSF.
SULCAL_K_PER_YEAR = 0.016
SULCAL_AGE0 = 38.0

# streams of the per-subject random generator
_S_AFFINE, _S_WARP, _S_VENT, _S_ATROPHY, _S_WMH, _S_TUMOUR, _S_IMAGE = range(1, 8)


@dataclass(eq=False)
class PhantomSubject:
    """One phantom subject on a regular RAS grid.

    Attributes:
        spec: the :class:`SubjectSpec` it was made from.
        affine: float64 (4, 4), voxel index [i, j, k] -> subject RAS mm.
        partial_volumes: float32 (10, X, Y, Z) in :data:`LABEL_NAMES` order; each voxel sums to 1.
        labels: uint8 (X, Y, Z), argmax of ``partial_volumes``.
        images: {"T1", "FLAIR", "T2"} -> float32 (X, Y, Z) in [0, 1], skull-stripped (0 outside).
        ventricle_pv: float32 (X, Y, Z), fraction of each voxel that is ventricular CSF (lateral and
            third ventricles); it is part of the ``csf`` channel.
    """

    spec: SubjectSpec
    affine: np.ndarray
    partial_volumes: np.ndarray
    labels: np.ndarray
    images: dict
    ventricle_pv: np.ndarray

    @property
    def shape(self) -> tuple:
        """Grid shape (X, Y, Z)."""
        return tuple(self.labels.shape)

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    @property
    def ventricle_mask(self) -> np.ndarray:
        """bool (X, Y, Z): the true ventricles = voxels labelled csf whose CSF is mostly
        ventricular (``ventricle_pv >= 0.5 * partial_volumes[csf]``)."""
        return (self.labels == CSF) & (self.ventricle_pv >= 0.5 * self.partial_volumes[CSF])

    @property
    def true_ventricular_volume_ml(self) -> float:
        """Sum of the ventricular CSF partial volume (lateral + third ventricles) in mL."""
        return float(self.ventricle_pv.sum(dtype=np.float64)) * self.voxel_volume_ml

    @property
    def true_brain_volume_ml(self) -> float:
        """Brain (parenchyma) volume in mL: sum of the partial volumes of gm, wm, dgm, brainstem
        and the lesion channels (CSF and background excluded)."""
        pv = self.partial_volumes
        return float(sum(pv[c].sum(dtype=np.float64) for c in TISSUE_CHANNELS)) * self.voxel_volume_ml

    @property
    def lesion_fractions(self) -> dict:
        """{"wmh", "tumour", "edema", "gdtumour"} -> lesion volume / brain volume, where the lesion
        volume is the sum of that channel's partial volume and the brain volume is
        :attr:`true_brain_volume_ml` (which includes the lesions). 0.0 for absent lesions."""
        pv = self.partial_volumes
        brain = sum(pv[c].sum(dtype=np.float64) for c in TISSUE_CHANNELS)
        return {LABEL_NAMES[c]: float(pv[c].sum(dtype=np.float64) / brain) for c in LESION_CHANNELS}

    @cached_property
    def _measured(self) -> dict:
        return measure.measure_t1(self.images["T1"], self.affine)

    @property
    def measured_ventricular_volume_ml(self) -> float:
        """Ventricular volume estimated from ``images["T1"]`` alone
        (:func:`.measure.measure_ventricular_volume_ml`; computed on first access, then cached)."""
        return self._measured["ventricular_volume_ml"]

    @property
    def measured_brain_volume_ml(self) -> float:
        """Brain volume estimated from ``images["T1"]`` alone (:func:`.measure.measure_brain_volume_ml`)."""
        return self._measured["brain_volume_ml"]

    @property
    def measured_deep_csf_ml(self) -> float:
        """Deep-CSF baseline from ``images["T1"]`` alone (:func:`.measure.measure_deep_csf_ml`)."""
        return self._measured["deep_csf_ml"]

    def summary(self) -> dict:
        """Scalars describing the subject (spec, true and measured volumes, lesion fractions)."""
        return {
            "spec": self.spec.to_dict(),
            "true_ventricular_volume_ml": self.true_ventricular_volume_ml,
            "true_brain_volume_ml": self.true_brain_volume_ml,
            "measured_ventricular_volume_ml": self.measured_ventricular_volume_ml,
            "measured_brain_volume_ml": self.measured_brain_volume_ml,
            "lesion_fractions": self.lesion_fractions,
        }


#: How a subject's WMH load is drawn (:class:`PhantomPopulation`), and the loads' range (fraction of
#: the brain).
WMH_LOADS = ("age", "even", "heavy")
WMH_LOAD_RANGE = (0.0005, 0.06)
#: The loads of ``wmh_load="heavy"``: the upper part of :data:`WMH_LOAD_RANGE`, where a label
#: generator trained on ``"even"`` loads alone mistook a large WMH request for a tumour (issue 23).
HEAVY_WMH_LOAD_RANGE = (0.01, 0.06)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def median_ventricular_volume_ml(age: float) -> float:
    """Population median of the true ventricular volume (mL) at ``age`` (before head-size effects)."""
    rate = math.log(VENT_MEDIAN_82 / VENT_MEDIAN_45) / (AGE_RANGE[1] - AGE_RANGE[0])
    return VENT_MEDIAN_45 * math.exp(rate * (age - AGE_RANGE[0]))


class PhantomPopulation:
    """A seeded population of phantom subjects on a fixed RAS grid centred on the brain.

    Args:
        seed: population seed; ``sample_spec(index)`` depends only on (seed, index).
        spacing_mm: isotropic voxel size of the output grid (mm).
        shape: output grid shape (X, Y, Z); the grid centre is the brain centre, axes are R, A, S.
        p_wmh: probability of some WMH at age 45 (rises linearly to ``p_wmh + 0.35`` at 82).
        p_tumour: probability of a tumour.
        wmh_load: how a subject's WMH load is drawn, given it has some: ``"age"`` (log-normal around
            an age-dependent median, what ageing cohorts show; most loads are 0.1-1.7 %) or
            ``"even"`` (log-uniform over 0.05-6 %, from the same random draw): a label generator's
            training population, so that large WMH requests are not out of its training data;
            ``"heavy"`` (log-uniform over 1-6 %): extra subjects for the loads that "even" leaves
            rare (a third of its WMH subjects lie above 1 %).

    The template preparation (~5-10 s) happens on first use and is cached per process.
    """

    def __init__(
        self,
        seed: int = 0,
        spacing_mm: float = 2.5,
        shape=(64, 80, 64),
        *,
        p_wmh: float = 0.35,
        p_tumour: float = 0.25,
        wmh_load: str = "age",
    ):
        if wmh_load not in WMH_LOADS:
            raise ValueError(f"wmh_load {wmh_load!r} is not one of {', '.join(WMH_LOADS)}")
        self.seed = int(seed)
        self.spacing_mm = float(spacing_mm)
        self.shape = tuple(int(s) for s in shape)
        self.p_wmh = float(p_wmh)
        self.p_tumour = float(p_tumour)
        self.wmh_load = wmh_load
        self._template: Optional[PreparedTemplate] = None

    # ----------------------------------------------------------------- grid
    @property
    def template(self) -> PreparedTemplate:
        if self._template is None:
            self._template = prepare_template(antialias_sigma_mm(self.spacing_mm))
        return self._template

    @property
    def centre_mm(self) -> np.ndarray:
        """Centre of the output grid (RAS mm) = MNI centre of the template brain (x=0, y=-17, z=5)."""
        return np.array([0.0, -17.0, 5.0])

    @property
    def affine(self) -> np.ndarray:
        """float64 (4, 4) voxel -> RAS mm of the output grid (shared by every subject)."""
        a = np.eye(4)
        a[:3, :3] *= self.spacing_mm
        a[:3, 3] = self.centre_mm - self.spacing_mm * (np.array(self.shape) - 1) / 2.0
        return a

    def template_labels(self) -> np.ndarray:
        """The undeformed template as a label map on the output grid (uint8, :data:`LABEL_NAMES`
        values): what lesion insertion registers to a patient's scan (no subject affine, warp, ageing
        or lesion)."""
        T = self.template
        n = int(np.prod(self.shape))
        axes = [self.affine[d, 3] + self.spacing_mm * np.arange(self.shape[d]) for d in range(3)]
        P = np.stack(np.meshgrid(*axes, indexing="ij"), 0).reshape(3, n)
        Q = P - self.centre_mm[:, None] + T.brain_centre_mm[:, None]
        vox = T.mm_to_vox[:3, :3] @ Q + T.mm_to_vox[:3, 3:4]
        lim = np.array(T.maps.shape[:3], np.float64)[:, None] - 1.0
        inside = np.flatnonzero(np.all((vox >= 0.0) & (vox <= lim), axis=0))
        samp = np.zeros((n, T_SULCAL), np.float32)
        samp[:, T_BG] = 1.0
        samp[inside] = trilinear_gather(T.maps, vox[:, inside])[:, :T_SULCAL]
        pv = np.zeros((n, len(LABEL_NAMES)), np.float32)
        for template_channel, label in (
            (T_BG, BACKGROUND),
            (T_CSF_EXT, CSF),
            (T_CSF_VENT, CSF),
            (T_GM, GM),
            (T_WM, WM),
            (T_DGM, DGM),
            (T_BS, BRAINSTEM),
        ):
            pv[:, label] += samp[:, template_channel]
        return pv.argmax(1).astype(np.uint8).reshape(self.shape)

    @property
    def tumour_candidates_mm(self) -> np.ndarray:
        """(N, 3) MNI mm positions in deep cerebral white matter usable as tumour centres."""
        return self.template.tumour_candidates_mm

    # ----------------------------------------------------------------- specs
    def sample_spec(self, index: int) -> SubjectSpec:
        """Deterministic :class:`SubjectSpec` for subject ``index`` of this population.

        Age ~ U(45, 82); sex 50/50; head_scale log-normal (sd 3 %); ventricle_z, atrophy_z ~ N(0, 1);
        WMH with probability p_wmh + 0.35 (age - 45) / 37, load log-normal with median
        0.15 % (45 y) to 1.2 % (82 y) of brain volume; a tumour with probability p_tumour.
        """
        ss = np.random.SeedSequence([self.seed, int(index), 0x5B1A])
        rng = np.random.default_rng(ss)
        age = float(rng.uniform(*AGE_RANGE))
        sex = "male" if rng.random() < 0.5 else "female"
        head_scale = float(np.exp(rng.normal(0.0, 0.03)))
        ventricle_z = float(rng.normal())
        atrophy_z = float(rng.normal())
        deformation_seed = int(ss.generate_state(1, np.uint32)[0])
        t_age = (age - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0])
        wmh_load = 0.0
        u_wmh, z_wmh = rng.random(), rng.normal()
        if u_wmh < self.p_wmh + 0.35 * t_age:
            if self.wmh_load in ("even", "heavy"):
                u = 0.5 * (1.0 + math.erf(z_wmh / math.sqrt(2.0)))  # the same draw, made uniform
                lo, hi = WMH_LOAD_RANGE if self.wmh_load == "even" else HEAVY_WMH_LOAD_RANGE
                wmh_load = float(math.exp(math.log(lo) + u * math.log(hi / lo)))
            else:
                median = 0.0015 * math.exp(math.log(8.0) * t_age)
                wmh_load = float(np.clip(median * math.exp(0.8 * z_wmh), *WMH_LOAD_RANGE))
        tumour = None
        u_t = rng.random()
        tum_draws = rng.random(8)
        if u_t < self.p_tumour:
            cands = self.tumour_candidates_mm
            c = cands[int(tum_draws[0] * len(cands)) % len(cands)]
            enhancing = bool(tum_draws[1] < 0.75)
            tumour = TumourSpec(
                centre_mm=tuple(float(v) for v in c),
                radius_mm=float(8.0 + 12.0 * tum_draws[2]),
                necrotic_fraction=float(0.4 + 0.35 * tum_draws[3]) if enhancing else 1.0,
                enhancing=enhancing,
                edema_mm=float(3.0 + 12.0 * tum_draws[4]),
                irregularity=float(0.15 + 0.25 * tum_draws[5]),
                mass_effect=float(0.4 + 0.5 * tum_draws[6]),
            )
        return SubjectSpec(
            age=age,
            sex=sex,
            wmh_load=wmh_load,
            tumour=tumour,
            deformation_seed=deformation_seed,
            head_scale=head_scale,
            ventricle_z=ventricle_z,
            atrophy_z=atrophy_z,
        )

    def subject(self, index: int) -> PhantomSubject:
        """``make(sample_spec(index))``."""
        return self.make(self.sample_spec(index))

    # ----------------------------------------------------------------- model pieces
    def ventricle_flow_time(self, spec: SubjectSpec) -> float:
        """Flow time tau (mm of wall displacement, roughly) giving the subject's target ventricle
        volume (age median x exp(VENT_LOG_SD * ventricle_z)), from the template's calibration."""
        scale = self._linear_scale(spec)
        target_native = median_ventricular_volume_ml(spec.age) * math.exp(VENT_LOG_SD * spec.ventricle_z)
        target_template = target_native / scale**3
        taus, vols = self.template.ventricle_calibration
        vols = np.maximum(vols, 1e-3) * (1.0 + 1e-9 * np.arange(len(vols)))  # strictly increasing
        return float(np.interp(math.log(target_template), np.log(vols), taus))

    @staticmethod
    def _linear_scale(spec: SubjectSpec) -> float:
        return NATIVE_SCALE * (MALE_SCALE if spec.sex == "male" else 1.0) * spec.head_scale

    def _rng(self, spec: SubjectSpec, stream: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([int(spec.deformation_seed), stream]))

    # ----------------------------------------------------------------- make
    def make(self, spec: SubjectSpec) -> PhantomSubject:
        """Build the subject described by ``spec`` (deterministic; ~0.2-0.4 s at 2.5 mm, 64x80x64)."""
        T = self.template
        shape, h = self.shape, self.spacing_mm
        n = int(np.prod(shape))
        affine = self.affine
        centre = self.centre_mm

        # --- subject-space grid coordinates (3, N), RAS mm
        axes = [affine[d, 3] + h * np.arange(shape[d]) for d in range(3)]
        P = np.stack(np.meshgrid(*axes, indexing="ij"), 0).reshape(3, n)

        # --- 1. global transform + smooth random deformation (subject mm -> template mm)
        ra = self._rng(spec, _S_AFFINE)
        angles = np.deg2rad(ra.normal(0.0, 2.0, 3))
        aniso = np.exp(ra.normal(0.0, 0.02, 3))
        shift = ra.normal(0.0, 1.5, 3)
        rw = self._rng(spec, _S_WARP)
        u = smooth_random_field(rw, shape, h, 40.0, 3) * 2.5 + smooth_random_field(rw, shape, h, 20.0, 3) * 0.8
        s = self._linear_scale(spec)
        R = _rotation(*angles)
        Q = P + u.reshape(3, n) - (centre + shift)[:, None]
        Q = (R.T @ Q) / (s * aniso)[:, None] + T.brain_centre_mm[:, None]
        Q2 = Q  # template coordinates before mass effect / ventricle flow (used to place tumours)

        # --- 2. tumour mass effect
        tum = spec.tumour
        if tum is not None and tum.mass_effect > 0:
            c = np.asarray(tum.centre_mm, np.float64)[:, None]
            rm = tum.mass_effect * tum.radius_mm / s
            d = Q2 - c
            r = np.sqrt((d * d).sum(0))
            r0 = np.cbrt(np.maximum(r**3 - rm**3, 0.0))
            Q = c + d * (r0 / np.maximum(r, 1e-6))[None, :]

        # --- 3. ventricle flow (pull-back: points move against the outward velocity)
        tau = self.ventricle_flow_time(spec)
        rv = self._rng(spec, _S_VENT)
        asym, ap = rv.normal(0.0, 0.15, 2)
        Q = flow_ventricles(T, Q, tau, asym, ap)

        # --- 4. sample the template maps (points outside the cropped template are background)
        vox = T.mm_to_vox[:3, :3] @ Q + T.mm_to_vox[:3, 3:4]
        lim = np.array(T.maps.shape[:3], np.float64)[:, None] - 1.0
        inside = np.flatnonzero(np.all((vox >= 0.0) & (vox <= lim), axis=0))
        samp = np.zeros((n, T.maps.shape[-1]), np.float32)
        samp[:, T_BG] = 1.0
        samp[inside] = trilinear_gather(T.maps, vox[:, inside])
        ch = {
            k: np.ascontiguousarray(samp[:, i]).reshape(shape)
            for k, i in (
                ("bg", T_BG),
                ("csf_ext", T_CSF_EXT),
                ("csf_vent", T_CSF_VENT),
                ("gm", T_GM),
                ("wm", T_WM),
                ("dgm", T_DGM),
                ("bs", T_BS),
            )
        }
        sulcal = np.ascontiguousarray(samp[:, T_SULCAL]).reshape(shape)
        del samp
        for k in ("wmh", "tumour", "edema", "gd"):
            ch[k] = np.zeros(shape, np.float32)

        # --- sulcal widening (cortical atrophy)
        rt = self._rng(spec, _S_ATROPHY)
        k_age = SULCAL_K_PER_YEAR * max(spec.age - SULCAL_AGE0, 0.0) * math.exp(0.3 * spec.atrophy_z)
        if k_age > 0:
            regional = np.exp(0.35 * smooth_random_field(rt, shape, h, 50.0, 1)[0])
            frac = np.clip(k_age * regional * sulcal, 0.0, 0.9).astype(np.float32)
            take = ch["gm"] * frac
            ch["gm"] -= take
            ch["csf_ext"] += take

        # --- lesions
        if tum is not None:
            paint_tumour(ch, tum, self._rng(spec, _S_TUMOUR), Q2.reshape((3,) + shape), s, h)
        if spec.wmh_load > 0:
            paint_wmh(ch, spec, self._rng(spec, _S_WMH), P.reshape((3,) + shape), Q2.reshape((3,) + shape), h)

        pv = np.stack(
            [
                ch["bg"],
                ch["csf_ext"] + ch["csf_vent"],
                ch["gm"],
                ch["wm"],
                ch["dgm"],
                ch["bs"],
                ch["wmh"],
                ch["tumour"],
                ch["edema"],
                ch["gd"],
            ]
        ).astype(np.float32)
        np.clip(pv, 0.0, 1.0, out=pv)
        pv /= pv.sum(0, keepdims=True)
        vent_pv = np.minimum(ch["csf_vent"], pv[CSF]).astype(np.float32)

        for mask, label in spec.painted_lesions:
            pv = paint_lesion(pv, np.asarray(mask), label)
            vent_pv = np.minimum(vent_pv, pv[CSF])

        labels = labels_from_partial_volumes(pv)
        ri = self._rng(spec, _S_IMAGE)
        images = {seq: render_contrast(pv, seq, ri, spacing_mm=h) for seq in SEQUENCES}
        return PhantomSubject(
            spec=spec, affine=affine, partial_volumes=pv, labels=labels, images=images, ventricle_pv=vent_pv
        )
