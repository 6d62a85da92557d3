"""Case table 2: ``labels`` and ``image-from-labels`` - label maps and partial volumes on bad grids,
headers and values."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hostile.fixtures import (
    DEMO_AFFINE,
    nifti_header_bomb,
    nifti_with_sform,
    phantom_labels,
    save_nii,
    save_nrrd,
    truncate,
)
from hostile.harness import Ctx, check_volume, cli


def IFL(labels: str = "{d}/lab.nii.gz", *extra, out: str = "out.nii.gz") -> list:
    return ["image-from-labels", labels, "--model", "label2image-demo", "--seed", "1", "--quiet", "-o", out, *extra]


def LAB(*extra, out: str = "lab.nii.gz") -> list:
    return ["labels", "--model", "labels-demo", "--seed", "3", "--preview-steps", "2", "--quiet", "-o", out, *extra]


def lab_file(writer: Callable[[Path], Any], name: str = "lab.nii.gz") -> Callable:
    def setup(ctx: Ctx):
        writer(ctx.d / name)

    return setup


def define_labels() -> None:
    c = "labels"
    base = phantom_labels()
    good = check_volume("out.nii.gz")
    # ---- labels command ----------------------------------------------------------------------
    cli(
        c,
        "labels --wmh 0.01 --partial-volumes pv.nii.gz (valid)",
        LAB("--wmh", "0.01", "--partial-volumes", "pv.nii.gz"),
        expect="good",
        files=["lab.nii.gz", "pv.nii.gz", "lab.json", "pv.json"],
        check=check_volume("lab.nii.gz"),
    )
    for flag, v in [
        ("--wmh", "-0.1"),
        ("--wmh", "2"),
        ("--wmh", "nan"),
        ("--tumour", "abc"),
        ("--edema", "inf"),
        ("--gdtumour", "1e400"),
    ]:
        cli(c, f"labels {flag} {v!r}", LAB(f"{flag}={v}"))
    cli(c, "labels --raw wmh=5", LAB("--raw", "wmh=5"))
    cli(c, "labels --partial-volumes <same as -o>", LAB("--partial-volumes", "lab.nii.gz"))
    cli(
        c, "labels -o lab.nii.gz --partial-volumes lab.nii (same sidecar lab.json)", LAB("--partial-volumes", "lab.nii")
    )
    cli(c, "labels --partial-volumes pv.png", LAB("--partial-volumes", "pv.png"))
    cli(
        c,
        "labels --model brain-ldm-demo (wrong kind)",
        ["labels", "--model", "brain-ldm-demo", "--seed", "3", "--quiet", "-o", "lab.nii.gz"],
    )
    cli(c, "labels --steps 0", LAB("--steps", "0"))
    cli(c, "labels --age 70 (condition of another model)", LAB("--age", "70"))
    # ---- image-from-labels: valid ------------------------------------------------------------
    cli(
        c,
        "image-from-labels uint8 label map (valid)",
        IFL(),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, base)),
        check=good,
    )
    cli(
        c,
        "image-from-labels int16 label map",
        IFL(),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, base.astype(np.int16))),
        check=good,
    )
    cli(
        c,
        "image-from-labels float32 integral label map",
        IFL(),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, base.astype(np.float32))),
        check=good,
    )
    cli(
        c,
        "image-from-labels NRRD label map",
        IFL("{d}/lab.nrrd"),
        expect="good",
        setup=lab_file(lambda p: save_nrrd(p, base), "lab.nrrd"),
        check=good,
    )
    cli(
        c,
        "image-from-labels MetaImage .mha label map",
        IFL("{d}/lab.mha"),
        expect="good",
        setup=lab_file(lambda p: save_nrrd(p, base), "lab.mha"),
        check=good,
    )
    pv = np.moveaxis(np.eye(10, dtype=np.float32)[base], 0, 0)  # (X, Y, Z, 10): NIfTI channels last
    cli(
        c,
        "image-from-labels 4D partial volumes (10 channels)",
        IFL(),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, pv)),
        check=good,
    )
    cli(
        c,
        "image-from-labels (X,Y,Z,1) label map",
        IFL(),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, base[..., None])),
        check=good,
    )
    small = phantom_labels((40, 48, 40))
    aff1 = np.diag([4.0, 4.0, 4.0, 1.0])
    aff1[:3, 3] = [-78, -96, -78]
    cli(
        c,
        "image-from-labels label map on another grid (4 mm)",
        IFL(),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, small, aff1)),
        check=good,
    )
    far = aff1.copy()
    far[:3, 3] += 5000
    cli(
        c,
        "image-from-labels off-grid labels --alignment centre",
        IFL("{d}/lab.nii.gz", "--alignment", "centre"),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, small, far)),
        check=good,
    )
    cli(
        c,
        "image-from-labels off-grid labels --alignment world (no overlap)",
        IFL(),
        setup=lab_file(lambda p: save_nii(p, small, far)),
    )
    cli(
        c,
        "image-from-labels --sequence flair (lower case)",
        IFL("{d}/lab.nii.gz", "--sequence", "flair"),
        expect="good",
        setup=lab_file(lambda p: save_nii(p, base)),
        check=good,
    )
    cli(
        c,
        "image-from-labels all-background label map",
        IFL(),
        expect="either",
        setup=lab_file(lambda p: save_nii(p, np.zeros_like(base))),
        check=good,
    )
    cli(
        c,
        "image-from-labels 1x1x1 label map",
        IFL(),
        expect="either",
        setup=lab_file(lambda p: save_nii(p, np.ones((1, 1, 1), np.uint8))),
        check=good,
    )
    # ---- image-from-labels: bad label maps -----------------------------------------------------
    bad_arrays = {
        "complex64 label map": lambda: base.astype(np.complex64),
        "complex128 label map (imaginary parts)": lambda: base.astype(np.complex128) + 1j,
        "RGB24 label map (structured dtype)": lambda: np.zeros(
            base.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]
        ),
        "RGB (X,Y,Z,3) uint8": lambda: np.stack([base] * 3, axis=-1),
        "float label map with fractions": lambda: base.astype(np.float32) + 0.5,
        "negative label values": lambda: base.astype(np.int16) - 1,
        "label value 10 (outside the 0-9 schema)": lambda: np.where(base == 6, 10, base).astype(np.uint8),
        "label value 255": lambda: np.where(base == 6, 255, base).astype(np.uint8),
        "int64 label 2**40": lambda: np.where(base == 6, np.int64(2**40), base.astype(np.int64)),
        "NaN in a float label map": lambda: np.where(base == 6, np.nan, base).astype(np.float32),
        "inf in a float label map": lambda: np.where(base == 6, np.inf, base).astype(np.float32),
        "empty label map (0x4x4)": lambda: np.zeros((0, 4, 4), np.uint8),
        "2D label map": lambda: base[:, :, 30],
        "5D label map (X,Y,Z,2,2)": lambda: np.zeros((8, 8, 8, 2, 2), np.uint8),
        "partial volumes with 3 channels": lambda: np.eye(3, dtype=np.float32)[np.clip(base, 0, 2)],
        "partial volumes above 1": lambda: pv * 3.0,
        "partial volumes negative": lambda: pv - 0.5,
        "partial volumes with NaN": lambda: np.where(pv == 1, np.nan, pv).astype(np.float32),
    }
    for desc, make in bad_arrays.items():
        cli(c, f"image-from-labels {desc}", IFL(), setup=lab_file(lambda p, make=make: save_nii(p, make())))
    zero = np.zeros((4, 4))
    sing = DEMO_AFFINE.copy()
    sing[:, 2] = 0
    sing[3, 3] = 1
    nanaff = DEMO_AFFINE.copy()
    nanaff[0, 0] = np.nan
    infaff = DEMO_AFFINE.copy()
    infaff[1, 3] = np.inf
    for desc, aff in [
        ("zero affine", zero),
        ("singular affine (rank 2)", sing),
        ("NaN affine", nanaff),
        ("inf affine", infaff),
    ]:
        cli(
            c,
            f"image-from-labels label map with {desc}",
            IFL(),
            setup=lab_file(lambda p, aff=aff: nifti_with_sform(p, base, aff)),
        )
    tiny = DEMO_AFFINE.copy()
    tiny[:3, :3] *= 1e-6
    cli(
        c,
        "image-from-labels label map with 1e-6 mm voxels",
        IFL(),
        expect="either",
        setup=lab_file(lambda p: save_nii(p, base, tiny)),
        check=good,
    )

    def write_then(fn):
        def w(p):
            save_nii(p, base)
            fn(p)

        return w

    cli(c, "image-from-labels truncated .nii.gz", IFL(), setup=lab_file(write_then(lambda p: truncate(p, 0.5))))
    cli(
        c,
        "image-from-labels truncated .nii (header only)",
        IFL("{d}/lab.nii"),
        setup=lab_file(lambda p: (save_nii(p, base), truncate(p, 352 / p.stat().st_size)), "lab.nii"),
    )
    cli(
        c,
        "image-from-labels truncated NRRD",
        IFL("{d}/lab.nrrd"),
        setup=lab_file(lambda p: (save_nrrd(p, base), truncate(p, 0.6)), "lab.nrrd"),
    )
    cli(
        c,
        "image-from-labels NRRD with garbage header",
        IFL("{d}/lab.nrrd"),
        setup=lab_file(lambda p: p.write_bytes(b"NRRD0004\ntype: banana\ndimension: -3\n\n\x00\x01"), "lab.nrrd"),
    )
    cli(
        c,
        "image-from-labels NRRD with zero spacing",
        IFL("{d}/lab.nrrd"),
        setup=lab_file(
            lambda p: p.write_bytes(
                b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\nspacings: 0 0 0\nencoding: raw\n\n" + bytes(64)
            ),
            "lab.nrrd",
        ),
    )
    cli(
        c,
        "image-from-labels text file named .nii",
        IFL("{d}/lab.nii"),
        setup=lab_file(lambda p: p.write_text("not an image\n" * 50), "lab.nii"),
    )
    cli(c, "image-from-labels empty .nii.gz file", IFL(), setup=lab_file(lambda p: p.write_bytes(b"")))
    cli(c, "image-from-labels LABELS is a folder", IFL(), setup=lambda ctx: (ctx.d / "lab.nii.gz").mkdir())
    cli(c, "image-from-labels LABELS does not exist", IFL("{d}/missing.nii.gz"))
    cli(c, "image-from-labels LABELS missing, name with a newline (one-line error?)", IFL("{d}/miss\ning.nii.gz"))
    cli(
        c,
        "image-from-labels LABELS without extension",
        IFL("{d}/lab"),
        setup=lab_file(
            lambda p: save_nii(p.with_suffix(".nii"), base) and p.write_bytes((p.with_suffix(".nii")).read_bytes()),
            "lab",
        ),
    )
    cli(
        c,
        "image-from-labels LABELS is a symlink loop",
        IFL(),
        setup=lambda ctx: (ctx.d / "lab.nii.gz").symlink_to(ctx.d / "lab.nii.gz"),
    )
    cli(c, "image-from-labels LABELS is /dev/zero", IFL("/dev/zero"))
    cli(
        c,
        "image-from-labels NRRD detached header reading /etc/passwd",
        IFL("{d}/lab.nhdr"),
        setup=lab_file(
            lambda p: p.write_bytes(
                b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 8 8 8\nencoding: raw\ndata file: /etc/passwd\n\n"
            ),
            "lab.nhdr",
        ),
    )
    cli(
        c,
        "image-from-labels NIfTI header bomb 32767^3 float64 (.nii)",
        IFL("{d}/lab.nii"),
        setup=lab_file(lambda p: nifti_header_bomb(p, (32767,) * 3, np.float64), "lab.nii"),
    )
    cli(
        c,
        "image-from-labels NIfTI header bomb 32767^3 uint8 (.nii.gz)",
        IFL(),
        setup=lab_file(lambda p: nifti_header_bomb(p, (32767,) * 3, np.uint8, gz=True)),
    )
    cli(
        c,
        "image-from-labels NIfTI header bomb 2048x2048x1024 uint8 (.nii.gz, 4 GB)",
        IFL(),
        setup=lab_file(lambda p: nifti_header_bomb(p, (2048, 2048, 1024), np.uint8, gz=True)),
    )
    cli(
        c,
        "image-from-labels NRRD header bomb 30000^3",
        IFL("{d}/lab.nrrd"),
        setup=lab_file(
            lambda p: p.write_bytes(
                b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 30000 30000 30000\nencoding: raw\n\n" + bytes(100)
            ),
            "lab.nrrd",
        ),
    )

    def hdr_edit(field, value):
        return lambda img: img.header.__setitem__(field, value)

    cli(
        c,
        "image-from-labels NIfTI with bogus datatype code 255",
        IFL(),
        setup=lab_file(lambda p: (save_nii(p, base), patch_nifti(p, "datatype", 255))),
    )
    cli(
        c,
        "image-from-labels NIfTI with dim[0]=8",
        IFL(),
        setup=lab_file(lambda p: (save_nii(p, base), patch_nifti(p, "dim0", 8))),
    )
    cli(
        c,
        "image-from-labels NIfTI with negative dimension",
        IFL(),
        setup=lab_file(lambda p: (save_nii(p, base), patch_nifti(p, "dim1", -64))),
    )
    cli(
        c,
        "image-from-labels NIfTI with vox_offset past the end",
        IFL(),
        setup=lab_file(lambda p: (save_nii(p, base), patch_nifti(p, "vox_offset", 1e9))),
    )
    cli(
        c,
        "image-from-labels NIfTI with scl_slope 0.5 (fractions after scaling)",
        IFL(),
        setup=lab_file(
            lambda p: save_nii(p, base.astype(np.int16), header_edit=lambda img: img.header.set_slope_inter(0.5, 0))
        ),
    )
    # ---- options ---------------------------------------------------------------------------------
    for v in ["PD", "", "T1 FLAIR"]:
        cli(
            c,
            f"image-from-labels --sequence {v!r}",
            IFL("{d}/lab.nii.gz", f"--sequence={v}"),
            setup=lab_file(lambda p: save_nii(p, base)),
        )
    cli(
        c,
        "image-from-labels --sequence 't1\\n' (whitespace)",
        IFL("{d}/lab.nii.gz", "--sequence=t1\n"),
        expect="either",
        setup=lab_file(lambda p: save_nii(p, base)),
        check=good,
    )
    for v in ["left", "", "CENTRE"]:
        cli(
            c,
            f"image-from-labels --alignment {v!r}",
            IFL("{d}/lab.nii.gz", f"--alignment={v}"),
            setup=lab_file(lambda p: save_nii(p, base)),
        )
    cli(
        c,
        "image-from-labels --steps 2 (SPADE GAN takes none)",
        IFL("{d}/lab.nii.gz", "--steps", "2"),
        setup=lab_file(lambda p: save_nii(p, base)),
    )
    cli(
        c,
        "image-from-labels --sampler ddim (SPADE GAN takes none)",
        IFL("{d}/lab.nii.gz", "--sampler", "ddim"),
        setup=lab_file(lambda p: save_nii(p, base)),
    )
    cli(
        c,
        "image-from-labels --model brain-ldm-demo (wrong kind)",
        ["image-from-labels", "{d}/lab.nii.gz", "--model", "brain-ldm-demo", "--quiet", "-o", "out.nii.gz"],
        setup=lab_file(lambda p: save_nii(p, base)),
    )
    cli(
        c,
        "image-from-labels -o <the input file itself>",
        IFL(out="lab.nii.gz"),
        setup=lab_file(lambda p: save_nii(p, base)),
    )


def patch_nifti(path: Path, field: str, value) -> None:
    """Edit one field of a (gzipped) NIfTI-1 header in place, bypassing nibabel's checks."""
    import struct

    gz = str(path).endswith(".gz")
    raw = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    if field == "datatype":
        struct.pack_into("<h", raw, 70, value)
    elif field.startswith("dim"):
        struct.pack_into("<h", raw, 40 + 2 * int(field[3:]), value)
    elif field == "vox_offset":
        struct.pack_into("<f", raw, 108, value)
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
