"""Figures of the evaluation reports: a grid of slices with a text caption under each cell.

The captions use a built-in 5x7 pixel font (the characters numbers and volumes need), so that a
report figure carries its measured values in the image itself without a plotting dependency.
"""

from __future__ import annotations

import numpy as np

from SynthBrainLib.outputs.preview import orthogonal_slices, windowed

#: 5x7 glyphs, one string of 7 rows of 5 pixels per character.
_GLYPHS = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "%": "11000 11001 00010 00100 01000 10011 00011",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "a": "00000 00000 01110 00001 01111 10001 01111",
    "d": "00001 00001 01101 10011 10001 10001 01111",
    "e": "00000 00000 01110 10001 11111 10000 01110",
    "g": "00000 01111 10001 10001 01111 00001 01110",
    "m": "00000 00000 11010 10101 10101 10001 10001",
    "o": "00000 00000 01110 10001 10001 10001 01110",
    "r": "00000 00000 10110 11001 10000 10000 10000",
    "s": "00000 00000 01111 10000 01110 00001 11110",
    "t": "01000 01000 11100 01000 01000 01001 00110",
    "w": "00000 00000 10001 10001 10101 10101 01010",
}
GLYPH_HEIGHT, GLYPH_WIDTH = 7, 5


def render_text(text: str, scale: int = 2) -> np.ndarray:
    """uint8 (7 * scale, 6 * scale * len(text)) image of ``text`` in white on black.

    Raises:
        ValueError: a character the built-in font does not have (named, with the ones it has).
    """
    missing = sorted(set(text) - set(_GLYPHS))
    if missing:
        raise ValueError(f"caption {text!r}: no glyph for {''.join(missing)!r}; available: {''.join(sorted(_GLYPHS))}")
    cells = []
    for ch in text:
        rows = [[int(b) for b in row] for row in _GLYPHS[ch].split()]
        glyph = np.pad(np.asarray(rows, np.uint8) * 255, ((0, 0), (0, 1)))  # one column of spacing
        cells.append(glyph)
    strip = np.concatenate(cells, axis=1) if cells else np.zeros((GLYPH_HEIGHT, 0), np.uint8)
    return strip.repeat(scale, axis=0).repeat(scale, axis=1)


def captioned_grid(
    volumes: list[list[np.ndarray]],
    captions: list[list[list[str]]],
    window: tuple[float, float] = (0.0, 1.0),
    zoom: int = 3,
    gap: int = 6,
) -> np.ndarray:
    """uint8 figure: ``volumes[row][col]`` as its axial over its coronal mid-slice, with the lines
    of ``captions[row][col]`` under it.

    Args:
        volumes: rows of RAS (X, Y, Z) volumes (one row per seed, say; columns share a request).
        captions: the same nesting, a list of text lines per cell.
        window: intensity range mapped to 0-255.
        zoom: pixels per voxel (nearest neighbour).
    """
    cells_by_row = []
    for vol_row, cap_row in zip(volumes, captions, strict=True):
        cells = []
        for vol, lines in zip(vol_row, cap_row, strict=True):
            tiles = [windowed(s, window, zoom) for s in orthogonal_slices(np.asarray(vol, np.float32))[:2]]
            width = max(t.shape[1] for t in tiles)
            text = [render_text(line) for line in lines]
            width = max([width] + [t.shape[1] for t in text])
            stack = []
            for part in tiles + text:
                stack += [np.pad(part, ((0, gap // 2), (0, width - part.shape[1])))]
            cells.append(np.concatenate(stack, axis=0))
        height = max(c.shape[0] for c in cells)
        cells = [np.pad(c, ((0, height - c.shape[0]), (0, gap))) for c in cells]
        cells_by_row.append(np.concatenate(cells, axis=1))
    width = max(r.shape[1] for r in cells_by_row)
    rows = [np.pad(r, ((0, gap), (0, width - r.shape[1]))) for r in cells_by_row]
    return np.concatenate(rows, axis=0)
