"""Case table 4: ``batch`` - condition CSVs, ranges, restarts of damaged batches."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from hostile.fixtures import deep_json, sha256_file, sidecar, truncate
from hostile.harness import Ctx, G, Run, add, changes, cli, evidence, judge, marker, run_cli, snapshot, watched


def BATCH(*extra, out: str = "B", model: str = "brain-ldm-demo") -> list:
    return ["batch", "--model", model, "--steps", "2", "--quiet", "--out", out, *extra]


def check_batch(n: int, folder: str = "B", suffix: str = ".nii.gz") -> Callable:
    def check(ctx: Ctx, run: Run):
        b = ctx.d / folder
        for i in range(n):
            data = b / f"sample_{i:05d}{suffix}"
            side = b / f"sample_{i:05d}.json"
            if not data.is_file():
                return f"{data.name} missing"
            rec = sidecar(side)
            if not isinstance(rec, dict) or rec.get("sha256_of_data") != sha256_file(data):
                return f"{side.name} missing or does not match {data.name}"
        manifest = b / "manifest.csv"
        if not manifest.is_file():
            return "manifest.csv missing"
        rows = manifest.read_text().strip().splitlines()
        if len(rows) != n + 1:
            return f"manifest.csv has {len(rows) - 1} rows, expected {n}"
        return None

    return check


def csv_setup(content: bytes | str, name: str = "c.csv") -> Callable:
    def setup(ctx: Ctx):
        p = ctx.d / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def define_batch() -> None:
    c = "batch"
    cli(
        c,
        "batch -n 2 --range age=50:60 --range sex=female,male (valid)",
        BATCH("-n", "2", "--range", "age=50:60", "--range", "sex=female,male", "--seed", "1"),
        expect="good",
        check=check_batch(2),
    )
    cli(
        c,
        "batch --conditions <2-row CSV> (valid)",
        BATCH("--conditions", "c.csv"),
        expect="good",
        setup=csv_setup("age,sex\n60,female\n70,male\n"),
        check=check_batch(2),
    )
    cli(
        c,
        "batch --conditions <CSV with UTF-8 BOM, empty cell>",
        BATCH("--conditions", "c.csv"),
        expect="good",
        setup=csv_setup(b"\xef\xbb\xbfage,sex\n60,\n"),
        check=check_batch(1),
    )
    cli(
        c,
        "batch --model labels-demo --range wmh=0:0.02 -n 1",
        BATCH("-n", "1", "--range", "wmh=0:0.02", model="labels-demo"),
        expect="good",
        check=check_batch(1),
    )
    cli(
        c,
        "batch --format NRRD -n 1",
        BATCH("-n", "1", "--format", "NRRD"),
        expect="good",
        check=check_batch(1, suffix=".nrrd"),
    )
    for desc, content in [
        ("not UTF-8 (latin-1)", b"age,sex\n60,f\xe9male\n"),
        ("unknown column 'height'", "age,height\n60,180\n"),
        ("age 'abc'", "age\nabc\n"),
        ("age 'nan'", "age\nnan\n"),
        ("age '1e999'", "age\n1e999\n"),
        ("sex 'alien'", "sex\nalien\n"),
        ("a NUL byte", b"age\n6\x000\n"),
        ("a 200000-character field", "age\n" + "7" * 200_000 + "\n"),
        ("a header and no rows", "age,sex\n"),
        ("empty", ""),
        ("only a newline", "\n"),
        ("a '$...' expression as a value", f"age\n$__import__('os').system('touch {marker('dollar-csv')}')\n"),
        ("binary garbage", bytes(range(256)) * 4),
        ("UTF-16 encoded", "age,sex\n60,female\n".encode("utf-16")),
    ]:
        cli(c, f"batch --conditions <CSV: {desc}>", BATCH("--conditions", "c.csv"), setup=csv_setup(content))
    cli(
        c,
        "batch --conditions <CSV: duplicate column names>",
        BATCH("--conditions", "c.csv"),
        expect="either",
        setup=csv_setup("age,age\n60,70\n"),
        check=check_batch(1),
    )
    cli(
        c,
        "batch --conditions <CSV: a row with extra fields>",
        BATCH("--conditions", "c.csv"),
        expect="either",
        setup=csv_setup("age\n60,70,80\n"),
        check=check_batch(1),
    )
    cli(
        c, "batch --conditions <a directory>", BATCH("--conditions", "cdir"), setup=lambda ctx: (ctx.d / "cdir").mkdir()
    )
    cli(c, "batch --conditions <missing>", BATCH("--conditions", "missing.csv"))
    cli(
        c, "batch --conditions <missing, name with a newline> (one-line error?)", BATCH("--conditions", "miss\ning.csv")
    )
    cli(
        c,
        "batch --conditions <2 rows> -n 5",
        BATCH("--conditions", "c.csv", "-n", "5"),
        setup=csv_setup("age\n60\n70\n"),
    )
    cli(
        c,
        "batch --conditions <CSV> --range age=50:60 (both)",
        BATCH("--conditions", "c.csv", "--range", "age=50:60"),
        setup=csv_setup("age\n60\n"),
    )
    # ---- --out -----------------------------------------------------------------------------------
    cli(
        c,
        "batch --out <an existing file>",
        BATCH("-n", "1", out="afile"),
        setup=lambda ctx: (ctx.d / "afile").write_text("precious"),
    )
    cli(c, "batch --out /proc/synthbrain-batch", BATCH("-n", "1", out="/proc/synthbrain-batch"))
    cli(c, "batch --out /sys/synthbrain-batch (unwritable)", BATCH("-n", "1", out="/sys/synthbrain-batch"))
    cli(
        c,
        "batch --out <file>/sub (parent is a file)",
        BATCH("-n", "1", out="afile/sub"),
        setup=lambda ctx: (ctx.d / "afile").write_text("x"),
    )
    cli(c, "batch --out <300-character folder name>", BATCH("-n", "1", out="o" * 300))
    # ---- --range, -n, other options --------------------------------------------------------------
    for v in [
        "age",
        "age=",
        "age=abc:def",
        "age=90:100",
        "age=82:45",
        "=1:2",
        "age=nan:1",
        "age=1:2:3",
        "sex=",
        "sex=female,alien",
        "height=1:2",
        "age=-inf:inf",
        "age=:",
    ]:
        cli(c, f"batch --range {v!r}", BATCH("-n", "1", "--range", v))
    for v in ["0", "-1", "1000001", "1.5", str(2**70)]:
        cli(c, f"batch -n {v}", BATCH(f"--count={v}"))
    cli(c, "batch without -n or --conditions", BATCH())
    for v in ["png", "", "nii.gz.gz", "mha"]:
        cli(c, f"batch --format {v!r}", BATCH("-n", "1", f"--format={v}"))
    for v in ["-1", str(2**63), str(2**64)]:
        cli(c, f"batch --seed {v}", BATCH("-n", "1", f"--seed={v}"))
    cli(c, "batch --model label2image-demo", BATCH("-n", "1", model="label2image-demo"))
    cli(c, "batch --model no-such-model", BATCH("-n", "1", model="no-such-model"))
    cli(c, "batch --steps 0", BATCH("-n", "1", "--steps", "0"))
    cli(c, "batch --sampler pndm", BATCH("-n", "1", "--sampler", "pndm"))
    cli(c, "batch --precision float16", BATCH("-n", "1", "--precision", "float16"))
    cli(c, "batch --device cuda", BATCH("-n", "1", "--device", "cuda"))
    cli(c, "batch --decode nonsense", BATCH("-n", "1", "--decode", "nonsense"))
    # ---- restarts --------------------------------------------------------------------------------
    define_batch_restarts(c)


_BATCH_TEMPLATE: dict[str, Path] = {}
RESTART_ARGS = ["-n", "2", "--range", "age=50:60", "--seed", "4"]


def batch_template() -> Path:
    """A finished 2-sample batch, made once and copied for each restart case."""
    if "t" not in _BATCH_TEMPLATE:
        folder = G.root / "batch-template"
        folder.mkdir()
        home = folder / "home"
        home.mkdir()
        run = run_cli(["--home", str(home)] + BATCH(*RESTART_ARGS), folder)
        if run.rc != 0:
            raise RuntimeError(f"could not make the batch template: {evidence(run)}")
        _BATCH_TEMPLATE["t"] = folder / "B"
    return _BATCH_TEMPLATE["t"]


def define_batch_restarts(c: str) -> None:
    def restart(
        desc: str, damage: Callable[[Path], Any], expect: str, args: list | None = None, check: Callable | None = None
    ):
        def fn(ctx: Ctx):
            b = ctx.d / "B"
            shutil.copytree(batch_template(), b, symlinks=True)
            damage(b)
            before = snapshot(watched(ctx))
            run = run_cli(["--home", str(ctx.home)] + BATCH(*(args or RESTART_ARGS)), ctx.d)
            diff = changes(before, snapshot(watched(ctx)))
            return judge(expect, run, diff, ctx, check or check_batch(2))

        add(c, f"batch restart: {desc}", fn)

    def side(i):
        return lambda b: b / f"sample_{i:05d}.json"

    restart("sample_00000.nii.gz truncated (remade)", lambda b: truncate(b / "sample_00000.nii.gz", 0.3), "good")
    restart("sample_00001.json deleted (remade)", lambda b: (b / "sample_00001.json").unlink(), "good")
    restart("sample_00001.nii.gz deleted (remade)", lambda b: (b / "sample_00001.nii.gz").unlink(), "good")
    restart("nothing to do (all finished)", lambda b: None, "good")
    restart("manifest.csv garbage (rebuilt)", lambda b: (b / "manifest.csv").write_bytes(b"\xff\x00garbage"), "good")
    restart("sidecar sample_00000.json is a JSON list", lambda b: side(0)(b).write_text("[1, 2]"), "either")
    restart("sidecar sample_00000.json is {}", lambda b: side(0)(b).write_text("{}"), "either")
    restart("sidecar sample_00000.json not UTF-8", lambda b: side(0)(b).write_bytes(b'{"batch": "\xff"}'), "either")
    restart("sidecar sample_00000.json nested 200000 deep", lambda b: side(0)(b).write_text(deep_json()), "either")
    restart("sidecar sample_00000.json {'batch': 5}", lambda b: side(0)(b).write_text('{"batch": 5}'), "either")
    restart(
        "sidecar sample_00000.json {'batch': {...}, 'model': 'x'}",
        lambda b: side(0)(b).write_text('{"batch": {"index": 0}, "model": "x"}'),
        "either",
    )
    restart("batch.json is a JSON list", lambda b: (b / "batch.json").write_text("[]"), "either")
    restart("batch.json deleted", lambda b: (b / "batch.json").unlink(), "either")
    restart(
        "sample_00000.nii.gz replaced by a folder",
        lambda b: ((b / "sample_00000.nii.gz").unlink(), (b / "sample_00000.nii.gz").mkdir()),
        "bad",
    )
    restart(
        "rerun with another --seed into the same folder",
        lambda b: None,
        "bad",
        args=["-n", "2", "--range", "age=50:60", "--seed", "5"],
    )
    restart(
        "rerun with -n 3 into the same folder",
        lambda b: None,
        "bad",
        args=["-n", "3", "--range", "age=50:60", "--seed", "4"],
    )
