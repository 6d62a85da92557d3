#!/usr/bin/env python3
"""Adversarial campaign: hundreds of bad, hostile and edge-case inputs against ``synthbrain`` and SynthBrainLib.

Run from the repository root (about 20-35 minutes on 2 CPU cores)::

    OMP_NUM_THREADS=1 .venv/bin/python Testing/hostile/campaign.py --json /tmp/campaign.json

Options: ``--only TEXT`` runs the cases whose id, category or description contains TEXT (repeatable),
``--list`` prints the cases without running them, ``--keep`` keeps the temporary folders.

Contract checked (README "Every bad input ends with one line on stderr and exit status 2, and writes nothing"):

* a bad CLI input ends with exactly one non-blank stderr line starting with ``synthbrain: error:``
  (argparse's ``synthbrain <command>: error:`` is counted as clean but marked in the detail), exit
  status 2, no traceback, and nothing new or changed in the case folder (outputs, sidecars,
  temporary ``.<name>.*`` files), in ``--home`` (the model cache) or in ``$SYNTHBRAIN_HOME``;
* a valid input exits 0 and writes the promised files (and no temporary files);
* in the Python API a bad argument raises a ``SynthBrainError`` subclass with a one-line message;
* never: a traceback, exit 1, a hang, an existing file replaced without ``--overwrite``, weights
  run under a trusted model id without matching its checksum, code run from a checkpoint (pickle
  payloads would create a marker file), ``$...`` expressions in configs evaluated.

Each case is recorded as ``rejected cleanly``, ``accepted correctly`` or ``broken`` (with the reason)
in the ``--json`` file; a summary table per category is printed at the end. CLI cases run one at a
time in subprocesses (memory-limited to 10 GiB, killed after a timeout); API cases run in-process.
Every temporary folder is removed at the end (``--keep`` keeps them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# run as a script (python Testing/hostile/campaign.py): the repository and Testing/ on the path
for _path in (Path(__file__).resolve().parents[2], Path(__file__).resolve().parents[1]):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

from hostile import harness  # noqa: E402
from hostile.cases_api import define_api  # noqa: E402
from hostile.cases_batch import define_batch  # noqa: E402
from hostile.cases_concurrency import define_concurrency  # noqa: E402
from hostile.cases_generate import define_generate  # noqa: E402
from hostile.cases_labels import define_labels  # noqa: E402
from hostile.cases_models import define_models  # noqa: E402
from hostile.fixtures import REPO, Payload  # noqa: E402
from hostile.harness import (  # noqa: E402
    BROKEN,
    CASES,
    CATEGORIES,
    OK_ACCEPT,
    OK_REJECT,
    Ctx,
    G,
    Zygote,
    lines_of,
    markers_fired,
    run_cli,
    short,
    snapshot,
)


def self_check() -> list[str]:
    """The payload and the error format are real: a plain unpickle runs the payload; the CLI's own
    'age 300' refusal passes the clean-rejection test."""
    notes = []
    probe = G.root / "payload-probe.pkl"
    control = G.root / "control-marker"
    import pickle

    probe.write_bytes(pickle.dumps(Payload(control), protocol=2))
    subprocess.run(
        [sys.executable, "-c", f"import pickle; pickle.load(open({str(probe)!r}, 'rb'))"],
        env=G.env,
        capture_output=True,
        timeout=60,
    )
    notes.append(
        "payload self-check: a plain pickle.load of the payload "
        f"{'DID create' if control.exists() else 'did NOT create'} its marker (so the payloads are live)"
    )
    if harness.ZYGOTE is not None:
        d = G.root / "fidelity"
        d.mkdir()
        same = True
        for argv in (
            ["--home", str(d), "generate", "--model", "brain-ldm-demo", "--age", "300", "--quiet", "-o", "x.nii.gz"],
            ["--home", str(d), "generate", "--model", "brain-ldm-demo", "--seed", "abc", "-o", "x.nii.gz"],
            [
                "--home",
                str(d),
                "generate",
                "--model",
                "brain-ldm-demo",
                "--seed",
                "1",
                "--preview-steps",
                "2",
                "--quiet",
                "-o",
                "x.nii.gz",
            ],
        ):
            a, b = (
                run_cli(argv, d, real=True),
                run_cli(argv + ["--overwrite"] if argv[-1] == "x.nii.gz" and "--preview-steps" in argv else argv, d),
            )
            same &= (a.rc, lines_of(a.stderr)) == (b.rc, lines_of(b.stderr))
        notes.append(
            f"fork-server self-check: real subprocess and fork server {'agree' if same else 'DISAGREE'} on "
            "exit status and stderr of 3 runs"
        )
    return notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=False, default=None, help="write the records here")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only cases whose id, category or description contains this (repeatable)",
    )
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    ap.add_argument(
        "--no-zygote",
        action="store_true",
        help="run every CLI case as a fresh subprocess (slower: about twice the time)",
    )
    args = ap.parse_args(argv)

    G.root = Path(tempfile.mkdtemp(prefix="synthbrain-campaign-"))
    G.markers = G.root / "markers"
    G.sentinel_home = G.root / "sentinel-home"
    G.fake_home = G.root / "fake-home"
    for p in (G.markers, G.sentinel_home, G.fake_home, G.root / "api-home"):
        p.mkdir()
    exe = Path(sys.executable).with_name("synthbrain")
    G.sb = [str(exe)] if exe.is_file() else [sys.executable, "-m", "SynthBrainLib.cli"]
    G.env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        PYTHONDONTWRITEBYTECODE="1",
        SYNTHBRAIN_HOME=str(G.sentinel_home),
        HOME=str(G.fake_home),
        PYTHONPATH=str(REPO),
    )
    G.env.pop("SYNTHBRAIN_SHIPPED_MODELS", None)
    import torch

    torch.set_num_threads(1)
    if not args.no_zygote:
        harness.ZYGOTE = Zygote()

    define_generate()
    define_labels()
    define_models()
    define_batch()
    define_concurrency()
    define_api()
    prefix = {"generate": "GEN", "labels": "LAB", "models": "MOD", "batch": "BAT", "concurrency": "CON", "api": "API"}
    counters: dict[str, int] = {}
    planned = []
    for cat, desc, fn in CASES:
        counters[cat] = counters.get(cat, 0) + 1
        cid = f"{prefix[cat]}-{counters[cat]:03d}"
        if args.only and not any(o.lower() in f"{cid} {cat} {desc}".lower() for o in args.only):
            continue
        planned.append((cid, cat, desc, fn))
    if args.list:
        for cid, cat, desc, _ in planned:
            print(f"{cid}  {desc}")
        print(f"{len(planned)} cases")
        shutil.rmtree(G.root, ignore_errors=True)
        return 0

    records: list[dict] = []
    started = time.time()
    notes = self_check()
    for n in notes:
        print(n, flush=True)
    try:
        for k, (cid, cat, desc, fn) in enumerate(planned):
            d = G.root / "cases" / cid
            d.mkdir(parents=True)
            home = G.root / "homes" / cid
            home.mkdir(parents=True)
            ctx = Ctx(d=d, home=home, name=cid)
            t0 = time.time()
            try:
                result = fn(ctx)
            except Exception as exc:  # a harness failure is reported as such, never hidden
                result = (
                    BROKEN,
                    short(
                        f"HARNESS ERROR (not necessarily a library bug): {type(exc).__name__}: {exc} | "
                        f"{traceback.format_exc().splitlines()[-3:]}"
                    ),
                )
            fired = markers_fired()
            results = result if isinstance(result, list) else [(None, *result)]
            for j, (subdesc, outcome, detail) in enumerate(results):
                if fired and j == 0:
                    outcome, detail = BROKEN, f"CODE EXECUTED: payload marker(s) {fired} created | " + detail
                rid = cid if len(results) == 1 else f"{cid}{'abcdefgh'[j]}"
                rec = {
                    "id": rid,
                    "category": CATEGORIES[cat],
                    "input": desc + (f" -> {subdesc}" if subdesc else ""),
                    "outcome": outcome,
                    "detail": detail,
                }
                records.append(rec)
                flag = {"rejected cleanly": "ok-rej", "accepted correctly": "ok-acc", "broken": "BROKEN"}[outcome]
                print(
                    (
                        f"[{k + 1:3d}/{len(planned)} {time.time() - started:6.0f}s] {rid:9s} {flag:6s} "
                        f"{rec['input'][:90]}  ({time.time() - t0:.1f}s)"
                    )
                    + (f"\n      -> {detail[:300]}" if outcome == BROKEN else ""),
                    flush=True,
                )
            if not args.keep:
                for p in (d, home):
                    _force_rmtree(p)
        sentinel = snapshot([G.sentinel_home])
        if sentinel:
            records.append(
                {
                    "id": "ENV-001",
                    "category": "3 models import / cards / checkpoints",
                    "input": "$SYNTHBRAIN_HOME (not the --home of any case) untouched",
                    "outcome": BROKEN,
                    "detail": short(f"something wrote into $SYNTHBRAIN_HOME despite --home: {list(sentinel)[:5]}"),
                }
            )
    finally:
        elapsed = time.time() - started
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
        print_summary(records, elapsed)
        for n in notes:
            print(n)
        if harness.ZYGOTE is not None:
            harness.ZYGOTE.close()
        if args.keep:
            print(f"temporary folders kept in {G.root}")
        else:
            _force_rmtree(G.root)
    return 0


def _force_rmtree(path: Path) -> None:
    def onerror(func, p, exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, 0o755)
            func(p)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=onerror)


def print_summary(records: list[dict], elapsed: float) -> None:
    cats = list(CATEGORIES.values())
    rows = []
    for cat in cats + ["TOTAL"]:
        rs = records if cat == "TOTAL" else [r for r in records if r["category"] == cat]
        if not rs:
            continue
        rows.append(
            (
                cat,
                len(rs),
                sum(r["outcome"] == OK_REJECT for r in rs),
                sum(r["outcome"] == OK_ACCEPT for r in rs),
                sum(r["outcome"] == BROKEN for r in rs),
            )
        )
    w = max(len(r[0]) for r in rows) if rows else 10
    print()
    print(f"{'category':<{w}}  {'tried':>5}  {'rejected cleanly':>16}  {'accepted correctly':>18}  {'broken':>6}")
    for r in rows:
        if r[0] == "TOTAL":
            print("-" * (w + 55))
        print(f"{r[0]:<{w}}  {r[1]:>5}  {r[2]:>16}  {r[3]:>18}  {r[4]:>6}")
    argparse_style = sum(1 for r in records if "[argparse prefix]" in r["detail"])
    print(
        f"\n{argparse_style} clean rejections came from argparse ('synthbrain <command>: error: ...'); "
        f"elapsed {elapsed / 60:.1f} min"
    )
    broken = [r for r in records if r["outcome"] == BROKEN]
    if broken:
        print(f"\nbroken ({len(broken)}):")
        for r in broken:
            print(f"  {r['id']:9s} {r['input']}\n            {r['detail']}")


if __name__ == "__main__":
    sys.exit(main())
