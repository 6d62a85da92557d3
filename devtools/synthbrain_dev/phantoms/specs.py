"""What defines one phantom subject: its :class:`SubjectSpec` (age, sex, lesions, seeds) and an
optional :class:`TumourSpec`; ``PhantomPopulation.make`` is a pure function of them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class TumourSpec:
    """A tumour: solid part (enhancing rim + necrotic core) and surrounding edema.

    Attributes:
        centre_mm: tumour centre in MNI152 template coordinates (mm, RAS); it moves with the
            subject's anatomy (head size, deformation). ``PhantomPopulation.tumour_candidates_mm``
            lists deep white-matter positions.
        radius_mm: outer radius of the solid tumour in subject mm.
        necrotic_fraction: radius of the non-enhancing/necrotic core ("tumour" label) relative to
            ``radius_mm``; the shell outside it is enhancing tumour ("gdtumour").
        enhancing: False for a non-enhancing tumour: the whole solid part is "tumour".
        edema_mm: how far the edema extends beyond the solid tumour (mm); it only replaces white
            matter (and WMH), so it spreads along the white matter. 0 = no edema.
        irregularity: relative amplitude of the smooth random modulation of the tumour radius.
        mass_effect: fraction of the tumour radius that displaces (rather than replaces) tissue:
            a sphere of radius ``mass_effect * radius_mm`` pushes the surroundings away.
    """

    centre_mm: tuple = (28.0, -10.0, 25.0)
    radius_mm: float = 15.0
    necrotic_fraction: float = 0.5
    enhancing: bool = True
    edema_mm: float = 12.0
    irregularity: float = 0.2
    mass_effect: float = 0.7


@dataclass(frozen=True)
class SubjectSpec:
    """Everything that defines one phantom subject (``PhantomPopulation.make`` is a pure function
    of it and of the population grid).

    Attributes:
        age: years (the population samples 45-82; other values extrapolate the age model).
        sex: "female" or "male" (males: 3 % larger linear head size).
        wmh_load: target white-matter-hyperintensity volume as a fraction of the brain volume
            (see :attr:`PhantomSubject.lesion_fractions`); 0 = none. Realised to within ~1 %.
        tumour: a :class:`TumourSpec`, or None.
        deformation_seed: seeds every random choice of the subject (affine, smooth deformation,
            ventricle asymmetry, regional atrophy, lesion shapes, bias fields, noise).
        head_scale: individual linear head-size factor on top of sex (population: log-normal,
            sd 3 %).
        ventricle_z: individual deviation of the ventricular volume from the age median, in
            standard deviations of log volume (population: N(0, 1)).
        atrophy_z: individual deviation of cortical (sulcal) atrophy, in sd (population: N(0, 1)).
        painted_lesions: extra lesions painted last, as ``((mask, label), ...)`` with ``mask`` a
            bool or [0, 1] float array of the output grid shape and ``label`` a lesion name/index
            (see :func:`.labels.paint_lesion`). Not part of equality/hash.
    """

    age: float = 60.0
    sex: str = "female"
    wmh_load: float = 0.0
    tumour: Optional[TumourSpec] = None
    deformation_seed: int = 0
    head_scale: float = 1.0
    ventricle_z: float = 0.0
    atrophy_z: float = 0.0
    painted_lesions: tuple = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        if self.sex not in ("female", "male"):
            raise ValueError(f"sex must be 'female' or 'male', got {self.sex!r}")
        if not 0.0 <= self.wmh_load < 0.5:
            raise ValueError("wmh_load must be a fraction in [0, 0.5)")

    def to_dict(self) -> dict:
        """JSON-friendly dict (painted lesions are omitted)."""
        d = dataclasses.asdict(self)
        d.pop("painted_lesions")
        if self.tumour is not None:
            d["tumour"]["centre_mm"] = list(map(float, self.tumour.centre_mm))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SubjectSpec":
        d = dict(d)
        if d.get("tumour") is not None:
            t = dict(d["tumour"])
            t["centre_mm"] = tuple(t["centre_mm"])
            d["tumour"] = TumourSpec(**t)
        return cls(**d)
