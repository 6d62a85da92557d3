"""Render SynthBrain.png (128x128): an axial slice of the MNI152 template with painted lesions.

Development tool, not installed with the extension. Needs nilearn (the template ships in its
wheel) and scipy::

    python SynthBrain/Resources/Icons/make_icon.py

The MNI ICBM152 template's copyright notice is in NOTICE_MNI152.txt next to this file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

SIZE = 128
HERE = Path(__file__).resolve().parent


def axial_slice(z_mm: float = 18.0) -> np.ndarray:
    """Skull-stripped T1 slice (rows anterior at top, columns patient left at left), 0-1."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    t1 = load_mni152_template(resolution=1)
    mask = load_mni152_brain_mask(resolution=1)
    k = int(round((np.linalg.inv(t1.affine) @ np.array([0.0, 0.0, z_mm, 1.0]))[2]))
    image = np.asarray(t1.dataobj, dtype=np.float64)[:, :, k] * (np.asarray(mask.dataobj)[:, :, k] > 0)
    image = np.flipud(image.T)
    rows, cols = np.nonzero(image > 0)
    image = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return image / np.percentile(image[image > 0], 99.5)


def render() -> np.ndarray:
    brain = axial_slice()
    scale = (SIZE - 14) / max(brain.shape)
    brain = np.clip(ndi.zoom(brain, scale, order=1), 0, 1)
    canvas = np.zeros((SIZE, SIZE), dtype=np.float64)
    r0, c0 = (SIZE - brain.shape[0]) // 2, (SIZE - brain.shape[1]) // 2
    canvas[r0 : r0 + brain.shape[0], c0 : c0 + brain.shape[1]] = brain
    inside = canvas > 0.05

    rgb = np.stack([canvas * 0.92, canvas * 0.96, canvas], axis=-1)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    # Painted lesions: a tumour (red) with edema (green) in the right hemisphere (image left),
    # white-matter hyperintensities (yellow) beside the left ventricle.
    tumour = (yy - 52) ** 2 + (xx - 44) ** 2
    rgb[(tumour < 18**2) & inside] = 0.55 * rgb[(tumour < 18**2) & inside] + 0.45 * np.array([0.35, 0.78, 0.35])
    rgb[(tumour < 10**2) & inside] = np.array([0.90, 0.12, 0.12])
    rgb[(tumour < 5**2) & inside] = np.array([0.78, 0.0, 0.78])
    for cy, cx, r in ((58, 84, 4), (70, 88, 3), (48, 80, 3)):
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) & inside
        rgb[blob] = np.array([1.0, 0.95, 0.1])

    # Rounded dark-blue tile behind the brain.
    corner = 18
    qy = np.minimum(yy, SIZE - 1 - yy)
    qx = np.minimum(xx, SIZE - 1 - xx)
    outside = (qy < corner) & (qx < corner) & ((corner - qy) ** 2 + (corner - qx) ** 2 > corner**2)
    tile = np.array([0.10, 0.16, 0.28])
    background = ~inside
    rgb[background] = tile
    rgb[outside] = 0.0
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Minimal RGB PNG writer (SynthBrainLib.outputs.preview's would tag the icon as a synthetic image)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    height, width = rgb.shape[:2]
    raw = b"".join(b"\x00" + row.tobytes() for row in rgb.reshape(height, -1))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def main() -> Path:
    return write_png(HERE / "SynthBrain.png", render())


if __name__ == "__main__":
    print(main())
