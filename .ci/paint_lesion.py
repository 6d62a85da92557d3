"""Paint a white-matter lesion as a user would in a viewer: a ball of the model's wmh value (6) at a
point in world (RAS) coordinates, on the scan's own grid. Used by .ci/newcomer (the newcomer's
insert-lesions) and the packaging test.

    python paint_lesion.py SCAN OUT [--at R,A,S] [--radius MM]

The default point, RAS (-26, -10, 28) mm, lies in the left centrum semiovale of MNI-space brains (the
demo models' grid, and real scans registered to MNI152).
"""

import argparse

import nibabel as nib
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("scan")
parser.add_argument("out")
parser.add_argument("--at", default="-26,-10,28")
parser.add_argument("--radius", type=float, default=5.0)
args = parser.parse_args()
image = nib.load(args.scan)
centre = np.array([float(x) for x in args.at.split(",")])
ijk = np.indices(image.shape[:3]).reshape(3, -1)
ras = image.affine[:3, :3] @ ijk + image.affine[:3, 3:4]
inside = (np.linalg.norm(ras - centre[:, None], axis=0) <= args.radius).reshape(image.shape[:3])
if not inside.any():
    raise SystemExit(f"paint_lesion: {args.at} is outside {args.scan}")
nib.save(nib.Nifti1Image(np.where(inside, 6, 0).astype(np.uint8), image.affine), args.out)
print(f"{args.out}: {int(inside.sum())} voxels of wmh at RAS {args.at}")
