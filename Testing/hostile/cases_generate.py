"""Case table 1: ``generate`` - conditions, samplers, steps, seeds, devices, outputs."""

from __future__ import annotations

import os

from hostile.fixtures import SHIPPED
from hostile.harness import G, check_volume, cli


def GEN(*extra, out: str = "out.nii.gz", model: str = "brain-ldm-demo") -> list:
    return ["generate", "--model", model, "--seed", "1", "--preview-steps", "2", "--quiet", "-o", out, *extra]


def define_generate() -> None:
    c = "generate"
    good_vol = check_volume("out.nii.gz")
    # ---- conditions --------------------------------------------------------------------------
    for flag, values in {
        "--age": ["nan", "inf", "-inf", "1e400", "abc", "", "1e308", "-1", "44.999", "82.0001", "300", "0", "1_0"],
        "--ventricular-volume": ["nan", "-0.001", "95.01", "1e400", "x"],
        "--brain-volume": ["nan", "699", "1451", "-inf", "1e3x"],
    }.items():
        for v in values:
            cli(c, f"generate {flag} {v!r}", GEN(f"{flag}={v}"))
    for v in ["45", "82", "٧٠"]:
        cli(c, f"generate --age {v!r} (boundary / unicode digits)", GEN(f"--age={v}"), expect="good", check=good_vol)
    cli(
        c, "generate --ventricular-volume 0 (boundary)", GEN("--ventricular-volume", "0"), expect="good", check=good_vol
    )
    for v in ["", "alien", "0", "1", "f", "femalex", "None", "女", "female,male"]:
        cli(c, f"generate --sex {v!r}", GEN(f"--sex={v}"))
    for v in ["FEMALE", " male "]:
        cli(c, f"generate --sex {v!r} (case / spaces)", GEN(f"--sex={v}"), expect="good", check=good_vol)
    # ---- seed, steps, sampler ----------------------------------------------------------------
    for v in ["-1", str(2**64), str(2**63), "1.5", "abc", "", "0x10", "1e3"]:
        cli(c, f"generate --seed {v!r}", GEN(f"--seed={v}"))
    cli(c, "generate --seed 2**63-1 (largest)", GEN(f"--seed={2**63 - 1}"), expect="good", check=good_vol)
    for v in ["0", "-1", "1001", str(10**20), "2.5", "abc", ""]:
        cli(c, f"generate --steps {v!r}", GEN(f"--steps={v}"))
    cli(c, "generate --steps 1 (smallest)", GEN("--steps", "1"), expect="good", check=good_vol)
    for v in ["0", "-3", "100000"]:
        cli(c, f"generate --preview-steps {v!r}", GEN(f"--preview-steps={v}"))
    for v in ["pndm", "rflow", "", "euler", "ddim; rm -rf /", "dpm++2m "]:
        cli(c, f"generate --sampler {v!r}", GEN(f"--sampler={v}"))
    cli(c, "generate --sampler DDIM (upper case)", GEN("--sampler", "DDIM"), expect="good", check=good_vol)
    cli(c, "generate --sampler ddpm --steps 2", GEN("--sampler", "ddpm", "--steps", "2"), expect="good", check=good_vol)
    # ---- device / precision / decode ---------------------------------------------------------
    for v in ["cuda", "cuda:0", "cuda:-1", "gpu", "", "mps", "cpu:0", "cuda:99999999999999999999"]:
        cli(c, f"generate --device {v!r}", GEN(f"--device={v}"))
    cli(c, "generate --device ' CPU ' (case / spaces)", GEN("--device", " CPU "), expect="good", check=good_vol)
    for v in ["float16", "half", "", "fp32", "float64"]:
        cli(c, f"generate --precision {v!r}", GEN(f"--precision={v}"))
    for v in ["FLOAT32", "mixed", "bfloat16"]:
        cli(c, f"generate --precision {v}", GEN("--precision", v), expect="good", check=good_vol)
    for v in ["x", "", "tile"]:
        cli(c, f"generate --decode {v!r}", GEN(f"--decode={v}"))
    for v in ["TILED", "full"]:
        cli(c, f"generate --decode {v}", GEN("--decode", v), expect="good", check=good_vol)
    # ---- --raw -------------------------------------------------------------------------------
    for v in [
        "age",
        "age=",
        "=0.5",
        "age=abc",
        "age=nan",
        "age=1.5",
        "age=-0.1",
        "height=0.5",
        "sex=2",
        "age=1e999",
        "age=$__import__('os')",
    ]:
        cli(c, f"generate --raw {v!r}", GEN("--raw", v))
    cli(c, "generate --raw age=0.5 --age 70 (both)", GEN("--raw", "age=0.5", "--age", "70"))
    cli(c, "generate --raw age=0.5 twice", GEN("--raw", "age=0.5", "--raw", "age=0.5"))
    for v in ["brain_volume=0.4", "brain-volume=0.4", "sex=0.5"]:
        cli(c, f"generate --raw {v}", GEN("--raw", v), expect="good", check=good_vol)
    # ---- argument structure ------------------------------------------------------------------
    cli(c, "synthbrain (no arguments; real entry point)", [], real=True)
    cli(c, "synthbrain frobnicate (unknown command)", ["frobnicate"])
    cli(c, "generate --gender female (unknown option)", GEN("--gender", "female"))
    cli(c, "generate without -o", ["generate", "--model", "brain-ldm-demo", "--quiet"])
    cli(c, "generate --age (no value)", GEN("--age"))
    cli(c, "synthbrain --version (real entry point)", ["--version"], expect="good", home=False, real=True)
    # ---- --model -----------------------------------------------------------------------------
    for v in [
        "no-such-model",
        "",
        "../../etc",
        "/",
        "brain-ldm",
        "brainspade3d-labels",
        "label2image-demo",
        "labels-demo",
        "evil\nmodel",
        "Brain-LDM-Demo",
    ]:
        cli(c, f"generate --model {v!r}", GEN(model=v))
    cli(
        c,
        "generate --model <a file>",
        GEN(model="{d}/afile.txt"),
        setup=lambda ctx: (ctx.d / "afile.txt").write_text("x"),
    )
    cli(
        c,
        "generate --model <folder without card.json>",
        GEN(model="{d}/empty"),
        setup=lambda ctx: (ctx.d / "empty").mkdir(),
    )
    cli(c, "generate --model <path to shipped card.json>", GEN(model=str(SHIPPED / "brain-ldm-demo" / "card.json")))
    cli(
        c,
        "generate --model <shipped model folder path>",
        GEN(model=str(SHIPPED / "brain-ldm-demo")),
        expect="good",
        check=good_vol,
    )
    cli(
        c,
        "generate --home <a file>",
        GEN(),
        expect="either",
        home="{d}/homefile",
        setup=lambda ctx: (ctx.d / "homefile").write_text("x"),
        check=good_vol,
    )
    cli(c, "generate --home '' (empty)", GEN(), expect="either", home="", check=good_vol)

    # ---- outputs -----------------------------------------------------------------------------
    def existing(ctx):
        (ctx.d / "out.nii.gz").write_bytes(b"precious")

    cli(c, "generate -o <existing file> (no --overwrite)", GEN(), setup=existing)
    cli(
        c,
        "generate -o out.nii.gz with existing sidecar out.json",
        GEN(),
        setup=lambda ctx: (ctx.d / "out.json").write_text("{}"),
    )
    cli(
        c,
        "generate -o <dangling symlink>",
        GEN(),
        setup=lambda ctx: (ctx.d / "out.nii.gz").symlink_to(ctx.d / "missing-target.nii.gz"),
    )
    cli(
        c,
        "generate -o <dangling symlink into another folder>",
        GEN(),
        setup=lambda ctx: (
            (ctx.d / "elsewhere").mkdir(),
            (ctx.d / "out.nii.gz").symlink_to(ctx.d / "elsewhere" / "victim.nii.gz"),
        ),
    )

    def link_to_file(ctx):
        (ctx.d / "victim.txt").write_text("do not touch")
        (ctx.d / "out.nii.gz").symlink_to(ctx.d / "victim.txt")

    cli(c, "generate -o <symlink to an existing file>", GEN(), setup=link_to_file)
    cli(
        c,
        "generate -o out.nii.gz with dangling symlink at sidecar out.json",
        GEN(),
        setup=lambda ctx: (ctx.d / "out.json").symlink_to(ctx.d / "nowhere.json"),
    )
    cli(c, "generate -o <a directory named out.nii.gz>", GEN(), setup=lambda ctx: (ctx.d / "out.nii.gz").mkdir())
    cli(c, "generate -o <existing directory> (no extension)", GEN(out="{d}"))
    cli(c, "generate -o /proc/synthbrain-campaign.nii.gz", GEN(out="/proc/synthbrain-campaign.nii.gz"))
    cli(c, "generate -o /proc/self/out.nii.gz", GEN(out="/proc/self/out.nii.gz"))
    cli(c, "generate -o /sys/synthbrain-campaign.nii.gz (unwritable)", GEN(out="/sys/synthbrain-campaign.nii.gz"))
    cli(c, "generate -o /sys/newdir/out.nii.gz (unwritable parent)", GEN(out="/sys/synthbrain-campaign-dir/out.nii.gz"))
    if G.euid != 0:
        cli(
            c,
            "generate -o <chmod 555 folder>/out.nii.gz",
            GEN(out="ro/out.nii.gz"),
            setup=lambda ctx: ((ctx.d / "ro").mkdir(), os.chmod(ctx.d / "ro", 0o555)),
        )
    cli(
        c,
        "generate -o <file>/out.nii.gz (parent is a file)",
        GEN(out="afile.txt/out.nii.gz"),
        setup=lambda ctx: (ctx.d / "afile.txt").write_text("x"),
    )
    cli(c, "generate -o <300-character file name>", GEN(out="a" * 293 + ".nii.gz"))
    cli(c, "generate -o <path over 4096 characters>", GEN(out="/".join(["d" * 200] * 21) + "/out.nii.gz"))
    cli(
        c,
        "generate -o <247-character file name> (fits NAME_MAX)",
        GEN(out="b" * 240 + ".nii.gz"),
        expect="either",
        check=check_volume("b" * 240 + ".nii.gz"),
    )
    for v in ["out.png", "out.nii.gz.bak", "", "out", "out.mha", "out.nhdr", "out.json"]:
        cli(c, f"generate -o {v!r} (unsupported extension)", GEN(out=v))
    cli(c, "generate -o '.nii.gz' (empty stem)", GEN(out=".nii.gz"), expect="either", files=[".nii.gz", ".json"])
    cli(
        c,
        "generate -o out.NII.GZ (upper-case extension)",
        GEN(out="out.NII.GZ"),
        expect="either",
        check=check_volume("out.NII.GZ", "out.json"),
    )
    cli(c, "generate -o x.nii.gz --preview x.nii.gz (same file)", GEN("--preview", "x.nii.gz", out="x.nii.gz"))
    cli(c, "generate --preview out.jpg (not png)", GEN("--preview", "out.jpg"))
    cli(c, "generate --preview out.json (the sidecar)", GEN("--preview", "out.json"))
    cli(
        c,
        "generate --preview <existing png>",
        GEN("--preview", "p.png"),
        setup=lambda ctx: (ctx.d / "p.png").write_bytes(b"old"),
    )
    cli(
        c,
        "generate --preview <directory p.png>",
        GEN("--preview", "p.png"),
        setup=lambda ctx: (ctx.d / "p.png").mkdir(),
    )
    cli(
        c,
        "generate --preview /proc/p.png (fails after the volume is written)",
        GEN("--preview", "/proc/synthbrain-campaign.png"),
    )
    cli(
        c,
        "generate --preview new/sub/p.png (new folders)",
        GEN("--preview", "new/sub/p.png"),
        expect="good",
        files=["out.nii.gz", "new/sub/p.png"],
        check=good_vol,
    )
    cli(
        c,
        "generate -o deep/new/folders/out.nii.gz",
        GEN(out="deep/new/folders/out.nii.gz"),
        expect="good",
        check=check_volume("deep/new/folders/out.nii.gz"),
    )
    cli(c, "generate -o out.nrrd", GEN(out="out.nrrd"), expect="good", check=check_volume("out.nrrd"))
    cli(c, "generate -o <existing> --overwrite", GEN("--overwrite"), expect="good", setup=existing, check=good_vol)
    cli(
        c,
        "generate -o <existing name with a newline> (one-line error?)",
        GEN(out="bad\nname.nii.gz"),
        setup=lambda ctx: (ctx.d / "bad\nname.nii.gz").write_bytes(b"x"),
    )
    nonutf8 = os.fsdecode(b"caf\xe9-\xff.nii.gz")
    cli(
        c,
        "generate -o <non-UTF-8 file name b'caf\\xe9-\\xff.nii.gz'>",
        GEN(out=nonutf8),
        expect="either",
        check=check_volume(nonutf8),
    )
