"""Case table 3 (continued): weights under a trusted model id, checkpoint containers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from hostile.fixtures import SHIPPED, SHIPPED_SHA, perturbed_weights, sha256_file, sidecar
from hostile.harness import (
    BROKEN,
    OK_ACCEPT,
    OK_REJECT,
    Ctx,
    Run,
    add,
    changes,
    evidence,
    judge,
    lines_of,
    model_folder,
    run_cli,
    short,
    snapshot,
    watched,
)


def safetensors_header(header: dict) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + b"\x00" * 16


def torch_save_state(src: Path, dst: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(src)), str(dst))


def torch_save_container(p: Path, what: str, src: Path | None = None) -> None:
    import torch

    if what == "list":
        torch.save([torch.zeros(3), torch.ones(2)], str(p))
    elif what == "ints":
        torch.save({"a": 1, "b": 2}, str(p))
    elif what == "deep":
        from safetensors.torch import load_file

        data: Any = load_file(str(src))
        for _ in range(5):
            data = {"state_dict": data}
        torch.save(data, str(p))


def perturbed_folder(ctx: Ctx, src: str, name: str, seed: int, card_edit: Callable | None = None) -> Path:
    """A copy of shipped model ``src`` whose weights are all different (perturbed), card without checksums."""

    def weights(d: Path):
        for f in d.glob("*.safetensors"):
            perturbed_weights(SHIPPED / src / f.name, f, seed=seed, scale=0.2)

    return model_folder(ctx, src=src, name=name, strip_checksums=True, edit=card_edit, weights=weights)


def generate_weights(ctx: Ctx, out: str, model: str = "brain-ldm-demo") -> tuple[Run, dict | None]:
    if model == "labels-demo":
        args = [
            "--home",
            str(ctx.home),
            "labels",
            "--model",
            model,
            "--seed",
            "7",
            "--preview-steps",
            "2",
            "--quiet",
            "-o",
            out,
        ]
    else:
        args = [
            "--home",
            str(ctx.home),
            "generate",
            "--model",
            model,
            "--seed",
            "7",
            "--preview-steps",
            "2",
            "--quiet",
            "-o",
            out,
        ]
    run = run_cli(args, ctx.d)
    side = sidecar(ctx.d / out.replace(".nii.gz", ".json"))
    return run, (side or {}).get("weights")


def define_takeover(c: str) -> None:
    """A folder whose card claims a shipped/built-in id with other weights: the import must be refused,
    and ``generate --model <that id>`` must keep using the verified weights."""

    def takeover(
        src: str, claimed: str, extra: tuple = (), self_checksums: str | None = None, card_edit: Callable | None = None
    ):
        def fn(ctx: Ctx):
            def edit(k):
                k["id"] = claimed
                if card_edit:
                    card_edit(k)
                return k

            folder = perturbed_folder(ctx, src, "evil", seed=11, card_edit=edit)
            if self_checksums:  # checksums of the evil weights themselves
                card = json.loads((folder / "card.json").read_text())
                for w in card["weights"].values():
                    w[self_checksums] = hashlib.new(self_checksums, (folder / w["file"]).read_bytes()).hexdigest()
                (folder / "card.json").write_text(json.dumps(card, indent=1))
            before = snapshot(watched(ctx))
            run = run_cli(["--home", str(ctx.home), "models", "import", str(folder), *extra], ctx.d)
            diff = changes(before, snapshot(watched(ctx)))
            out, det = judge("bad", run, diff, ctx)
            records = [("import", out, det)]
            if claimed in SHIPPED_SHA:
                run2, weights = generate_weights(ctx, "after.nii.gz", claimed)
                if run2.rc == 0 and weights is not None:
                    used = {k: v.get("sha256") for k, v in weights.items()}
                    if used != SHIPPED_SHA[claimed]:
                        records.append(
                            (
                                "then generate --model " + claimed,
                                BROKEN,
                                short(
                                    f"model-id takeover: {claimed} now runs other weights (sha256 "
                                    f"{', '.join(f'{k} {v[:12]}' for k, v in used.items())}; "
                                    f"checksum recorded {[v.get('checksum') for v in weights.values()]}) "
                                    "instead of the shipped, checksummed ones"
                                ),
                            )
                        )
                    else:
                        records.append(
                            (
                                "then generate --model " + claimed,
                                OK_ACCEPT,
                                "still runs the shipped weights (sha256 match the card)",
                            )
                        )
                elif run2.rc == 2 and "Traceback" not in run2.stderr:
                    records.append(
                        (
                            "then generate --model " + claimed,
                            BROKEN if out == BROKEN else OK_REJECT,
                            short(
                                ("refused (the import broke the shipped model): " if out == BROKEN else "")
                                + lines_of(run2.stderr)[0]
                            ),
                        )
                    )
                else:
                    records.append(
                        ("then generate --model " + claimed, BROKEN, short(f"exit {run2.rc} | " + evidence(run2)))
                    )
            elif out == BROKEN:
                installed = ctx.home / "models" / claimed / "install.json"
                records[0] = (
                    "import",
                    BROKEN,
                    det + (f" | {installed.name} written under built-in id {claimed}" if installed.is_file() else ""),
                )
            return records

        return fn

    add(
        c,
        "model-id takeover: folder card id brain-ldm-demo, other weights, no checksums",
        takeover("brain-ldm-demo", "brain-ldm-demo"),
    )
    add(
        c,
        "model-id takeover: folder card id brain-ldm-demo, other weights, sha256 of the other weights",
        takeover("brain-ldm-demo", "brain-ldm-demo", self_checksums="sha256"),
    )
    add(
        c,
        "model-id takeover: card id brain-ldm-demo, other weights, --model brain-ldm-demo",
        takeover("brain-ldm-demo", "brain-ldm-demo", extra=("--model", "brain-ldm-demo")),
    )
    add(
        c,
        "model-id takeover: card id brain-ldm-demo, other weights, --allow-unverified",
        takeover("brain-ldm-demo", "brain-ldm-demo", extra=("--allow-unverified",)),
    )
    add(
        c,
        "model-id takeover: card id brain-ldm-demo, other weights, other card version",
        takeover("brain-ldm-demo", "brain-ldm-demo", card_edit=lambda k: k.update(version="9.9.9")),
    )
    add(
        c,
        "model-id takeover: folder card id labels-demo, other weights, no checksums",
        takeover("labels-demo", "labels-demo"),
    )
    add(
        c,
        "model-id takeover: folder card id brain-ldm (built-in), demo-size networks, no checksums",
        takeover("brain-ldm-demo", "brain-ldm"),
    )
    add(
        c,
        "model-id takeover: folder card id brain-ldm (built-in), md5 of its own weights",
        takeover("brain-ldm-demo", "brain-ldm", self_checksums="md5"),
    )

    def renamed(ctx: Ctx):
        """A folder claiming brain-ldm-demo imported under a new id (--model my-copy): fine, and brain-ldm-demo
        must be unchanged."""
        folder = perturbed_folder(ctx, "brain-ldm-demo", "evil", seed=12)
        before = snapshot(watched(ctx))
        run = run_cli(["--home", str(ctx.home), "models", "import", str(folder), "--model", "my-copy"], ctx.d)
        diff = changes(before, snapshot(watched(ctx)))
        out, det = judge("either", run, diff, ctx)
        recs = [("import --model my-copy", out, det)]
        run2, weights = generate_weights(ctx, "after.nii.gz", "brain-ldm-demo")
        used = {k: v.get("sha256") for k, v in (weights or {}).items()}
        recs.append(
            (
                "then generate --model brain-ldm-demo",
                OK_ACCEPT if run2.rc == 0 and used == SHIPPED_SHA["brain-ldm-demo"] else BROKEN,
                "shipped weights used"
                if used == SHIPPED_SHA["brain-ldm-demo"]
                else short(f"exit {run2.rc}; weights {used} | {evidence(run2)}"),
            )
        )
        return recs

    add(c, "folder card id brain-ldm-demo imported under a new id (--model my-copy)", renamed)

    def single_ckpt(allow: bool):
        def fn(ctx: Ctx):
            other = perturbed_weights(
                SHIPPED / "brain-ldm-demo" / "diffusion.safetensors", ctx.d / "mine.safetensors", seed=5
            )
            before = snapshot(watched(ctx))
            run = run_cli(
                [
                    "--home",
                    str(ctx.home),
                    "models",
                    "import",
                    str(other),
                    "--model",
                    "brain-ldm-demo",
                    "--component",
                    "diffusion",
                    *(["--allow-unverified"] if allow else []),
                ],
                ctx.d,
            )
            diff = changes(before, snapshot(watched(ctx)))
            # Refused with or without --allow-unverified: brain-ldm-demo is a complete shipped model,
            # used in place; other weights belong under an id of their own (issue 11: a taken name
            # is refused, or the weights are imported under a new id).
            out, det = judge("bad", run, diff, ctx)
            recs = [("import" + (" --allow-unverified" if allow else ""), out, det)]
            if not allow:
                return recs
            run2, weights = generate_weights(ctx, "after.nii.gz")
            rec = (weights or {}).get("diffusion", {})
            if run2.rc == 0 and rec.get("sha256") == SHIPPED_SHA["brain-ldm-demo"]["diffusion"] and run.rc == 2:
                recs.append(("then generate", OK_ACCEPT, "the refused weights are nowhere: the shipped weights run"))
            elif run2.rc == 0 and rec.get("sha256") == SHIPPED_SHA["brain-ldm-demo"]["diffusion"]:
                recs.append(
                    (
                        "then generate",
                        BROKEN,
                        short(
                            "the import said OK (exit 0, and printed the shipped file as installed) but its "
                            "weights are never used: "
                            f"generate runs the shipped diffusion weights ({rec.get('location')}, "
                            f"{rec.get('checksum')}); "
                            "--allow-unverified weights for a shipped id are accepted, copied into the cache "
                            "and silently ignored"
                        ),
                    )
                )
            else:
                recs.append(
                    (
                        "then generate",
                        BROKEN,
                        short(f"exit {run2.rc}; diffusion weights recorded as {rec} | {evidence(run2)}"),
                    )
                )
            return recs

        return fn

    add(c, "models import <other diffusion weights> --model brain-ldm-demo (no --allow-unverified)", single_ckpt(False))
    add(
        c,
        "models import <other diffusion weights> --model brain-ldm-demo --allow-unverified (a complete "
        "shipped id: refused)",
        single_ckpt(True),
    )

    def tampered_install(ctx: Ctx):
        """A cache entry for brain-ldm-demo whose install.json vouches for other weights ('verified')."""
        folder = ctx.home / "models" / "brain-ldm-demo"
        folder.mkdir(parents=True)
        entries = {}
        for key in ("autoencoder", "diffusion"):
            f = perturbed_weights(
                SHIPPED / "brain-ldm-demo" / f"{key}.safetensors", folder / f"{key}.safetensors", seed=3
            )
            entries[key] = {
                "file": f.name,
                "sha256": sha256_file(f),
                "size": f.stat().st_size,
                "mtime": f.stat().st_mtime,
                "checksum": "verified",
                "source": "x",
            }
        (folder / "install.json").write_text(
            json.dumps({"model": "brain-ldm-demo", "card_version": "1.0.0", "weights": entries})
        )
        run, weights = generate_weights(ctx, "after.nii.gz")
        used = {k: v.get("sha256") for k, v in (weights or {}).items()}
        if run.rc == 0 and used and used != SHIPPED_SHA["brain-ldm-demo"]:
            return BROKEN, short(
                "weights whose sha256 differs from the card's were run under brain-ldm-demo (install.json "
                f"said 'verified'; card sha256 never compared): {used}"
            )
        if run.rc == 0:
            return OK_ACCEPT, "shipped weights used"
        return judge("bad", run, [], ctx)

    add(
        c,
        "cache install.json for brain-ldm-demo vouching for other weights (never checked against the card)",
        tampered_install,
    )
