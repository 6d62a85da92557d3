"""Montage of phantom subjects (axial / coronal / sagittal x T1 / FLAIR / T2 / labels) as a PNG.

Needs matplotlib (only this script; the library itself does not). Usage::

    python -m synthbrain_dev.phantoms.montage docs/images/phantoms_montage.png            # demo specs
    python -m synthbrain_dev.phantoms.montage out.png --indices 0 3 5                      # population
"""

from __future__ import annotations

import argparse

import numpy as np

from .labels import LABEL_NAMES
from .population import PhantomPopulation, SubjectSpec, TumourSpec

#: RGB colours of the labels (0..9) used by the montage.
LABEL_COLOURS = np.array(
    [
        [0, 0, 0],  # background
        [40, 90, 255],  # csf
        [150, 150, 150],  # gm
        [240, 240, 240],  # wm
        [255, 160, 0],  # dgm
        [220, 0, 220],  # brainstem
        [255, 255, 0],  # wmh
        [140, 0, 0],  # tumour
        [0, 200, 0],  # edema
        [255, 60, 60],  # gdtumour
    ],
    np.uint8,
)


def _slices(subject, centre_vox):
    i, j, k = (int(round(c)) for c in centre_vox)
    out = {}
    for name, img in list(subject.images.items()) + [("labels", subject.labels)]:
        out[name] = (img[:, :, k].T, img[:, j, :].T, img[i, :, :].T)  # axial, coronal, sagittal
    return out


def _pick_centre(subject):
    """Voxel to slice through: the tumour if any, else the WMH centre of mass or the ventricles."""
    from scipy import ndimage as ndi

    lab = subject.labels
    for names in (("tumour", "gdtumour", "edema"), ("wmh",)):
        m = np.isin(lab, [LABEL_NAMES.index(n) for n in names])
        if m.sum() > 20:
            c = np.array(ndi.center_of_mass(m))
            if names[0] == "wmh":
                v = np.array(ndi.center_of_mass(subject.ventricle_mask))
                return np.array([c[0], v[1], v[2] + 2])
            return c
    v = np.array(ndi.center_of_mass(subject.ventricle_mask))
    return np.array([v[0] + 6, v[1], v[2] + 2])


def save_montage(subjects, path, titles=None, dpi=110):
    """Write a PNG: one block of 3 rows (axial, coronal, sagittal) per subject, columns T1, FLAIR,
    T2 and the label map (colours: :data:`LABEL_COLOURS`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cols = ["T1", "FLAIR", "T2", "labels"]
    n = len(subjects)
    fig, axes = plt.subplots(
        3 * n, 4, figsize=(4 * 2.4, 3 * n * 2.4 + 0.6), squeeze=False, gridspec_kw=dict(wspace=0.02, hspace=0.12)
    )
    for s_i, subj in enumerate(subjects):
        sl = _slices(subj, _pick_centre(subj))
        for v in range(3):
            for c, name in enumerate(cols):
                ax = axes[3 * s_i + v, c]
                img = sl[name][v]
                if name == "labels":
                    ax.imshow(LABEL_COLOURS[img], origin="lower", interpolation="nearest")
                else:
                    ax.imshow(img, origin="lower", cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if s_i == 0 and v == 0:
                    ax.set_title(name, fontsize=10, pad=14)
            axes[3 * s_i + v, 0].set_ylabel(("axial", "coronal", "sagittal")[v], fontsize=8)
        t = titles[s_i] if titles else _default_title(subj)
        axes[3 * s_i, 0].text(0.0, 1.03, t, transform=axes[3 * s_i, 0].transAxes, fontsize=8, ha="left", va="bottom")
    handles = [Patch(color=LABEL_COLOURS[i] / 255.0, label=nm) for i, nm in enumerate(LABEL_NAMES) if i]
    fig.legend(handles=handles, loc="lower center", ncol=9, fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.04, right=0.99, top=1 - 0.35 / fig.get_figheight(), bottom=0.3 / fig.get_figheight())
    fig.savefig(path, dpi=dpi, facecolor="white")
    plt.close(fig)


def _default_title(subj):
    s = subj.spec
    parts = [
        f"age {s.age:.0f}, {s.sex}",
        f"ventricles {subj.true_ventricular_volume_ml:.0f} mL",
        f"brain {subj.true_brain_volume_ml:.0f} mL",
    ]
    lf = subj.lesion_fractions
    if lf["wmh"] > 0:
        parts.append(f"WMH {100 * lf['wmh']:.1f} %")
    if s.tumour is not None:
        parts.append("tumour " + ("enhancing" if s.tumour.enhancing else "non-enhancing"))
    return ", ".join(parts)


def demo_specs():
    """The three subjects of docs/images/phantoms_montage.png: a healthy 47-year-old woman, an
    80-year-old man with large ventricles and WMH, a 66-year-old woman with an enhancing tumour."""

    return [
        SubjectSpec(age=47, sex="female", deformation_seed=1, ventricle_z=-0.5),
        SubjectSpec(age=80, sex="male", wmh_load=0.02, deformation_seed=2, ventricle_z=1.0, atrophy_z=1.0),
        SubjectSpec(
            age=66,
            sex="female",
            wmh_load=0.004,
            deformation_seed=9,
            tumour=TumourSpec(
                centre_mm=(30.0, -20.0, 22.0), radius_mm=16.0, necrotic_fraction=0.6, edema_mm=12.0, irregularity=0.3
            ),
        ),
    ]


def main(argv=None):

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", help="PNG path")
    p.add_argument(
        "--indices",
        type=int,
        nargs="+",
        default=None,
        help="population subjects to show (default: the three demo specs)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spacing", type=float, default=2.5)
    p.add_argument("--shape", type=int, nargs=3, default=[64, 80, 64])
    p.add_argument("--dpi", type=int, default=110)
    a = p.parse_args(argv)
    pop = PhantomPopulation(seed=a.seed, spacing_mm=a.spacing, shape=tuple(a.shape))
    if a.indices:
        subjects = [pop.subject(i) for i in a.indices]
    else:
        subjects = [pop.make(s) for s in demo_specs()]
    save_montage(subjects, a.output, dpi=a.dpi)
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
