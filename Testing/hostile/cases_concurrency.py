"""Case table 5: concurrent writers of one output, one batch, one model cache."""

from __future__ import annotations

import json
import time

from hostile.cases_batch import BATCH, check_batch
from hostile.cases_generate import GEN
from hostile.cases_takeover import generate_weights, perturbed_folder
from hostile.fixtures import sha256_file, sidecar
from hostile.harness import (
    BROKEN,
    DEFAULT_TIMEOUT,
    ERR_RE,
    OK_ACCEPT,
    OK_REJECT,
    Ctx,
    add,
    evidence,
    finish,
    lines_of,
    run_cli,
    short,
    spawn,
)


def define_concurrency() -> None:
    c = "concurrency"

    def race_generate(trial: int, second_out: str = "same.nii.gz"):
        def fn(ctx: Ctx):
            outs = ["same.nii.gz", second_out]
            args = [["--home", str(ctx.home)] + GEN(out=o)[:-2] + ["-o", o] for o in outs]
            args[0][args[0].index("--seed") + 1] = "101"
            args[1][args[1].index("--seed") + 1] = "202"
            start = time.time()
            procs = [spawn(a, ctx.d) for a in args]
            runs = [finish(p, a, start, DEFAULT_TIMEOUT) for p, a in zip(procs, args)]
            rcs = [r.rc for r in runs]
            problems = []
            for name, r in zip("AB", runs):
                if r.timed_out or r.rc not in (0, 2) or "Traceback" in r.stderr:
                    problems.append(f"{name}: exit {r.rc} | {evidence(r)}")
                elif r.rc == 2 and (len(lines_of(r.stderr)) != 1 or not ERR_RE.match(lines_of(r.stderr)[0])):
                    problems.append(f"{name}: refusal not one clean line: {lines_of(r.stderr)[:3]}")
            if rcs == [0, 0]:
                problems.append(
                    "both runs succeeded: one output "
                    + ("(the shared sidecar same.json) " if second_out != outs[0] else "")
                    + "was replaced without --overwrite"
                )
            side = sidecar(ctx.d / "same.json")
            leftovers = [p.name for p in ctx.d.iterdir() if p.name.startswith(".")]
            if leftovers:
                problems.append(f"temporary files left: {leftovers}")
            if 0 in rcs:
                winner = rcs.index(0)
                data = ctx.d / outs[winner]
                if side is None or not data.is_file():
                    problems.append("winner's files missing")
                else:
                    if side.get("seed") != (101, 202)[winner]:
                        problems.append(
                            f"same.json has seed {side.get('seed')}, the winner (exit 0) used {(101, 202)[winner]}"
                        )
                    if side.get("sha256_of_data") != sha256_file(data):
                        problems.append("same.json does not describe the data file beside it")
                loser = 1 - winner
                if rcs[loser] == 2 and outs[loser] != outs[winner] and (ctx.d / outs[loser]).exists():
                    problems.append(f"loser's {outs[loser]} left behind without a sidecar of its own")
            if problems:
                return BROKEN, short("; ".join(problems), 900)
            if rcs.count(0) == 1:
                loser = rcs.index(2)
                return OK_REJECT, short(f"one won, the other refused: {lines_of(runs[loser].stderr)[0]}")
            return OK_REJECT, short(f"both refused: {lines_of(runs[0].stderr)[0]}")

        return fn

    for t in range(5):
        add(c, f"two 'generate -o same.nii.gz' at once (no --overwrite), trial {t + 1}", race_generate(t))
    for t in range(3):
        add(
            c,
            f"'generate -o same.nii.gz' and 'generate -o same.nii' at once (one sidecar same.json), trial {t + 1}",
            race_generate(t, "same.nii"),
        )

    def race_batch(trial: int, same: bool = False):
        def fn(ctx: Ctx):
            seeds = ["1", "1"] if same else ["1", "2"]
            args = [["--home", str(ctx.home)] + BATCH("-n", "2", "--range", "age=50:60", "--seed", s) for s in seeds]
            start = time.time()
            procs = [spawn(a, ctx.d) for a in args]
            runs = [finish(p, a, start, DEFAULT_TIMEOUT) for p, a in zip(procs, args)]
            rcs = [r.rc for r in runs]
            problems = []
            for name, r in zip("AB", runs):
                if r.timed_out or r.rc not in (0, 2) or "Traceback" in r.stderr:
                    problems.append(f"{name}: exit {r.rc} | {evidence(r)}")
                elif r.rc == 2 and (len(lines_of(r.stderr)) != 1 or not ERR_RE.match(lines_of(r.stderr)[0])):
                    problems.append(f"{name}: refusal not one clean line: {lines_of(r.stderr)[:3]}")
            b = ctx.d / "B"
            if not same and rcs == [0, 0]:
                problems.append("both batches (different seeds) succeeded into one folder")
            if 0 in rcs:
                err = check_batch(2)(ctx, runs[rcs.index(0)])
                if err:
                    problems.append("folder inconsistent: " + err)
                bases = {
                    json.loads((b / f"sample_{i:05d}.json").read_text()).get("batch", {}).get("base_seed")
                    for i in range(2)
                    if (b / f"sample_{i:05d}.json").is_file()
                }
                spec = sidecar(b / "batch.json") or {}
                if len(bases) > 1 or (bases and spec.get("base_seed") not in bases):
                    problems.append(
                        f"samples from different batches mixed: base seeds {sorted(map(str, bases))}, "
                        f"batch.json {spec.get('base_seed')}"
                    )
            if problems:
                return BROKEN, short("; ".join(problems), 900)
            if same:
                return OK_ACCEPT, f"exit codes {rcs}; folder consistent"
            loser = rcs.index(2) if 2 in rcs else 0
            return OK_REJECT, short(
                f"exit codes {rcs}: {lines_of(runs[loser].stderr)[0] if lines_of(runs[loser].stderr) else ''}"
            )

        return fn

    for t in range(2):
        add(c, f"two different batches (seeds 1 and 2) into one folder at once, trial {t + 1}", race_batch(t))
    add(c, "the same batch twice at once into one folder", race_batch(0, same=True))

    def race_import(trial: int):
        def fn(ctx: Ctx):
            f1 = perturbed_folder(
                ctx, "brain-ldm-demo", "twin1", seed=21, card_edit=lambda k: k.update(id="twin", description="first")
            )
            f2 = perturbed_folder(
                ctx, "brain-ldm-demo", "twin2", seed=22, card_edit=lambda k: k.update(id="twin", description="second")
            )
            args = [["--home", str(ctx.home), "models", "import", str(f)] for f in (f1, f2)]
            start = time.time()
            procs = [spawn(a, ctx.d) for a in args]
            runs = [finish(p, a, start, DEFAULT_TIMEOUT) for p, a in zip(procs, args)]
            problems = [
                f"{n}: exit {r.rc} | {evidence(r)}"
                for n, r in zip("AB", runs)
                if r.timed_out or r.rc not in (0, 2) or "Traceback" in r.stderr
            ]
            verify = run_cli(["--home", str(ctx.home), "models", "verify", "twin"], ctx.d)
            if verify.rc != 0 or "Traceback" in verify.stderr:
                problems.append(
                    f"models verify twin afterwards: exit {verify.rc} | {short(verify.stdout.strip())} | "
                    f"{evidence(verify)}"
                )
            gen, weights = generate_weights(ctx, "after.nii.gz", "twin")
            if gen.rc != 0:
                problems.append(f"generate --model twin afterwards: exit {gen.rc} | {evidence(gen)}")
            else:
                used = {k: v.get("sha256") for k, v in (weights or {}).items()}
                sets = [
                    {k: sha256_file(f / f"{k}.safetensors") for k in ("autoencoder", "diffusion")} for f in (f1, f2)
                ]
                if used not in sets:
                    problems.append(f"generate --model twin ran a mix of both imports' weights: {used}")
            if problems:
                return BROKEN, short("; ".join(problems), 900)
            return OK_ACCEPT, f"exit codes {[r.rc for r in runs]}; cache consistent afterwards"

        return fn

    for t in range(2):
        add(c, f"two 'models import' of different weights under one new id at once, trial {t + 1}", race_import(t))
