"""Case table 3: ``models import`` and model folders - cards made wrong field by field, checkpoints."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from hostile.cases_bundles import define_bundles
from hostile.cases_generate import GEN
from hostile.cases_takeover import define_takeover, safetensors_header, torch_save_container, torch_save_state
from hostile.fixtures import (
    DEL,
    SHIPPED,
    SHIPPED_SHA,
    ae,
    deep_json,
    perturbed_weights,
    set_field,
    sidecar,
    truncate,
    unet,
    write_payload,
)
from hostile.harness import DEFAULT_TIMEOUT, Ctx, Run, check_volume, cli, marker, model_folder


def GENF(model: str = "{d}/model", *extra, preview: bool = True) -> list:
    return [
        "generate",
        "--model",
        model,
        "--seed",
        "1",
        *(["--preview-steps", "2"] if preview else []),
        "--quiet",
        "-o",
        "out.nii.gz",
        *extra,
    ]


def define_models() -> None:
    c = "models"
    # ---- card mutations, used in place (generate --model <folder>) ---------------------------
    mutations: list[tuple[str, Callable | None, Any, dict]] = [
        ("autoencoder channels [80000]*3", lambda k: ae(k, "channels", [80000] * 3), None, {}),
        ("diffusion channels [65536]*3", lambda k: unet(k, "channels", [65536] * 3), None, {}),
        (
            "latent.shape [8, 100000, 100000, 100000]",
            lambda k: set_field(k, "latent.shape", [8, 100000, 100000, 100000]),
            None,
            {},
        ),
        (
            "latent.shape [8, 1, 1, 1] (does not decode to the output grid)",
            lambda k: set_field(k, "latent.shape", [8, 1, 1, 1]),
            None,
            {},
        ),
        (
            "num_train_timesteps 10**13",
            lambda k: set_field(k, "scheduler.kwargs.num_train_timesteps", 10**13),
            None,
            {},
        ),
        (
            "num_train_timesteps = max_steps = default_steps = 10**9 (default steps run)",
            lambda k: (
                set_field(k, "scheduler.kwargs.num_train_timesteps", 10**9),
                set_field(k, "sampling.max_steps", 10**9),
                set_field(k, "sampling.default_steps", 10**9),
            ),
            None,
            {"preview": False, "timeout": 120},
        ),
        (
            "default_steps 10**6 with max_steps 10**6 > num_train_timesteps 1000",
            lambda k: (set_field(k, "sampling.max_steps", 10**6), set_field(k, "sampling.default_steps", 10**6)),
            None,
            {"preview": False, "timeout": 120},
        ),
        ("norm_eps as a string '1e-6'", lambda k: ae(k, "norm_eps", "1e-6"), None, {}),
        (
            "norm_eps a '$...' expression",
            lambda k: ae(k, "norm_eps", f"$__import__('os').system('touch {marker('dollar-norm-eps')}') or 1e-6"),
            None,
            {},
        ),
        ("spatial_dims 7", lambda k: ae(k, "spatial_dims", 7), None, {}),
        ("spatial_dims '3' (string)", lambda k: ae(k, "spatial_dims", "3"), None, {}),
        ("norm_num_groups 7 (channels not divisible)", lambda k: ae(k, "norm_num_groups", 7), None, {}),
        ("with_conditioning 'yes' (string for a bool)", lambda k: unet(k, "with_conditioning", "yes"), None, {}),
        ("missing 'networks'", lambda k: set_field(k, "networks", DEL), None, {}),
        ("missing 'output'", lambda k: set_field(k, "output", DEL), None, {}),
        ("missing 'conditioning'", lambda k: set_field(k, "conditioning", DEL), None, {}),
        ("scheduler without kwargs", lambda k: set_field(k, "scheduler.kwargs", DEL), None, {}),
        ("schema_version 2", lambda k: set_field(k, "schema_version", 2), None, {}),
        ("schema_version true", lambda k: set_field(k, "schema_version", True), None, {}),
        (
            "id with a newline (one-line error?)",
            lambda k: (set_field(k, "id", "evil\nid"), set_field(k, "kind", "nonsense")),
            None,
            {},
        ),
        ("id '../../evil'", lambda k: set_field(k, "id", "../../evil"), None, {}),
        ("kind 'bogus'", lambda k: set_field(k, "kind", "bogus"), None, {}),
        ("card JSON is a list", None, "[1, 2, 3]", {}),
        ("card JSON is a string", None, '"brain-ldm-demo"', {}),
        ("card JSON is null", None, "null", {}),
        ("card JSON nested 200000 deep", None, deep_json(), {}),
        ("card JSON nested dict 100000 deep", None, '{"a":' * 100000 + "1" + "}" * 100000, {}),
        (
            "card.json not UTF-8",
            None,
            (SHIPPED / "brain-ldm-demo" / "card.json")
            .read_bytes()
            .replace(b"Small conditional", b"Sm\xe9ll conditional"),
            {},
        ),
        ("card.json empty", None, b"", {}),
        (
            "card.json with UTF-8 BOM",
            None,
            b"\xef\xbb\xbf" + (SHIPPED / "brain-ldm-demo" / "card.json").read_bytes(),
            {},
        ),
        (
            "weights file '../autoencoder.safetensors'",
            lambda k: set_field(k, "weights.autoencoder.file", "../autoencoder.safetensors"),
            None,
            {},
        ),
        ("weights file '/etc/passwd'", lambda k: set_field(k, "weights.autoencoder.file", "/etc/passwd"), None, {}),
        (
            "weights file with NUL 'auto\\x00encoder.safetensors'",
            lambda k: set_field(k, "weights.autoencoder.file", "auto\x00encoder.safetensors"),
            None,
            {},
        ),
        ("weights file ''", lambda k: set_field(k, "weights.autoencoder.file", ""), None, {}),
        ("weights file '..'", lambda k: set_field(k, "weights.autoencoder.file", ".."), None, {}),
        ("network class 'os.system'", lambda k: set_field(k, "networks.autoencoder.class", "os.system"), None, {}),
        ("network kwargs with '_target_'", lambda k: ae(k, "_target_", "os.system"), None, {}),
        (
            "samplers ['pndm'] for a v-prediction model",
            lambda k: (set_field(k, "sampling.samplers", ["pndm"]), set_field(k, "sampling.default_sampler", "pndm")),
            None,
            {},
        ),
        (
            "output.affine all zeros",
            lambda k: set_field(k, "output.affine", [[0, 0, 0, 0]] * 3 + [[0, 0, 0, 1]]),
            None,
            {},
        ),
        (
            "condition range [82, 45] (decreasing)",
            lambda k: set_field(
                k,
                "conditioning.variables",
                [dict(v, range=[82.0, 45.0]) if v["name"] == "age" else v for v in k["conditioning"]["variables"]],
            ),
            None,
            {},
        ),
        ("cross_attention_dim 5 (4 variables)", lambda k: unet(k, "cross_attention_dim", 5), None, {}),
        (
            "two weights name the same file",
            lambda k: set_field(k, "weights.diffusion.file", "autoencoder.safetensors"),
            None,
            {},
        ),
        (
            "sha256 in upper case",
            lambda k: set_field(k, "weights.autoencoder.sha256", k["weights"]["autoencoder"]["sha256"].upper()),
            None,
            {},
        ),
        (
            "sha256 of other weights (mismatch)",
            lambda k: set_field(k, "weights.autoencoder.sha256", "0" * 64),
            None,
            {},
        ),
        (
            "latent scale_factor 1e-300 (decoder gets inf)",
            lambda k: set_field(k, "latent.scale_factor", 1e-300),
            None,
            {},
        ),
        (
            "spacing 1e999 (JSON Infinity)",
            None,
            (SHIPPED / "brain-ldm-demo" / "card.json")
            .read_text()
            .replace('"spacing": [\n      2.5,', '"spacing": [\n      1e999,'),
            {},
        ),
        (
            "conditioning with no variables (in_channels mismatch)",
            lambda k: set_field(k, "conditioning.variables", []),
            None,
            {},
        ),
    ]
    for desc, edit, raw, opts in mutations:
        cli(
            c,
            f"generate --model <folder: {desc}>",
            GENF(preview=opts.get("preview", True)),
            timeout=opts.get("timeout", DEFAULT_TIMEOUT),
            setup=lambda ctx, edit=edit, raw=raw: model_folder(ctx, edit=edit, raw=raw),
        )
    # symlinked / special weight files in a folder model without checksums
    cli(
        c,
        "generate --model <folder: autoencoder weights symlink to /etc/passwd, no checksums>",
        GENF(),
        setup=lambda ctx: (
            model_folder(ctx, strip_checksums=True),
            (ctx.d / "model" / "autoencoder.safetensors").unlink(),
            (ctx.d / "model" / "autoencoder.safetensors").symlink_to("/etc/passwd"),
        ),
    )
    cli(
        c,
        "generate --model <folder: weights symlink loop>",
        GENF(),
        setup=lambda ctx: (
            model_folder(ctx, strip_checksums=True),
            (ctx.d / "model" / "autoencoder.safetensors").unlink(),
            (ctx.d / "model" / "autoencoder.safetensors").symlink_to(ctx.d / "model" / "autoencoder.safetensors"),
        ),
    )
    cli(
        c,
        "generate --model <folder: weights is a FIFO>",
        GENF(),
        setup=lambda ctx: (
            model_folder(ctx, strip_checksums=True),
            (ctx.d / "model" / "autoencoder.safetensors").unlink(),
            os.mkfifo(ctx.d / "model" / "autoencoder.safetensors"),
        ),
    )
    cli(
        c,
        "generate --model <folder: NaN weights, no checksums>",
        GENF(),
        setup=lambda ctx: model_folder(
            ctx,
            strip_checksums=True,
            weights=lambda d: perturbed_weights(
                SHIPPED / "brain-ldm-demo" / "diffusion.safetensors", d / "diffusion.safetensors", fill=float("nan")
            ),
        ),
    )

    # ---- pickle payloads in .pt files ------------------------------------------------------------
    def pt_card(k):
        for w in k["weights"].values():
            for key in ("sha256", "md5", "size_bytes"):
                w.pop(key, None)
            w["format"] = "auto"
        k["weights"]["diffusion"]["file"] = "diffusion.pt"
        k["id"] = "payload-model"
        return k

    for kind in ("zip", "zip-state-dict", "legacy", "raw", "raw-eval"):
        name = f"payload-folder-{kind}"
        cli(
            c,
            f"generate --model <folder with pickle payload diffusion.pt ({kind})>",
            GENF(),
            setup=lambda ctx, kind=kind, name=name: model_folder(
                ctx, edit=pt_card, weights=lambda d: write_payload(d / "diffusion.pt", kind, marker(name))
            ),
        )
    for kind, ext in (
        ("zip", ".pt"),
        ("legacy", ".pth"),
        ("raw", ".ckpt"),
        ("raw-eval", ".bin"),
        ("zip-state-dict", ".pt"),
    ):
        name = f"payload-import-{kind}{ext}"
        cli(
            c,
            f"models import <pickle payload{ext} ({kind})> --model brain-ldm-demo --component diffusion "
            "--allow-unverified",
            [
                "models",
                "import",
                f"{{d}}/evil{ext}",
                "--model",
                "brain-ldm-demo",
                "--component",
                "diffusion",
                "--allow-unverified",
            ],
            setup=lambda ctx, kind=kind, ext=ext, name=name: write_payload(ctx.d / f"evil{ext}", kind, marker(name)),
        )
    cli(
        c,
        "models import <pickle payload saved as .safetensors> --allow-unverified",
        [
            "models",
            "import",
            "{d}/evil.safetensors",
            "--model",
            "brain-ldm-demo",
            "--component",
            "diffusion",
            "--allow-unverified",
        ],
        setup=lambda ctx: write_payload(ctx.d / "evil.safetensors", "raw", marker("payload-as-safetensors")),
    )
    # ---- single-checkpoint imports --------------------------------------------------------------
    D = SHIPPED / "brain-ldm-demo" / "diffusion.safetensors"

    def imp(path: str, *extra) -> list:
        return ["models", "import", path, "--model", "brain-ldm-demo", "--component", "diffusion", *extra]

    ckpts: list[tuple[str, Callable[[Path], Any], tuple]] = [
        ("truncated safetensors", lambda p: (shutil.copy(D, p), truncate(p, 0.5)), ()),
        (
            "safetensors with wrong keys",
            lambda p: perturbed_weights(D, p, edit=lambda t: {("x." + k): v for k, v in t.items()}),
            (),
        ),
        (
            "safetensors with a missing key",
            lambda p: perturbed_weights(D, p, edit=lambda t: dict(list(t.items())[1:])),
            (),
        ),
        (
            "safetensors with an extra key",
            lambda p: perturbed_weights(D, p, edit=lambda t: {**t, "extra.weight": t[next(iter(t))].clone()}),
            (),
        ),
        (
            "safetensors with a wrong shape",
            lambda p: perturbed_weights(
                D,
                p,
                edit=lambda t: {
                    k: (v.reshape(-1)[:-1].contiguous() if i == 0 else v) for i, (k, v) in enumerate(t.items())
                },
            ),
            (),
        ),
        ("empty safetensors (no tensors)", lambda p: p.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}"), ()),
        (
            "safetensors with a 2**62-byte header length",
            lambda p: p.write_bytes((2**62).to_bytes(8, "little") + b"{}"),
            (),
        ),
        (
            "safetensors header claiming a 10**15-element tensor",
            lambda p: p.write_bytes(
                safetensors_header({"w": {"dtype": "F32", "shape": [10**5] * 3, "data_offsets": [0, 4 * 10**15]}})
            ),
            (),
        ),
        ("safetensors with a non-JSON header", lambda p: p.write_bytes((16).to_bytes(8, "little") + b"\xff" * 16), ()),
        ("text file named .pt", lambda p: p.write_text("this is not a checkpoint\n"), ()),
        ("empty .pt", lambda p: p.write_bytes(b""), ()),
        ("truncated .pt (zip)", lambda p: (torch_save_state(D, p), truncate(p, 0.5)), ()),
        ("safetensors bytes named .pt", lambda p: shutil.copy(D, p), ()),
        (".pt holding a list of tensors", lambda p: torch_save_container(p, "list"), ()),
        (".pt holding a dict of ints", lambda p: torch_save_container(p, "ints"), ()),
        (".pt holding a tensor wrapped 5 dicts deep", lambda p: torch_save_container(p, "deep", D), ()),
        ("other weights of the right shape, no --allow-unverified", lambda p: perturbed_weights(D, p), ()),
    ]
    for desc, make, extra in ckpts:
        ext = ".pt" if ".pt" in desc else ".safetensors"
        cli(
            c,
            f"models import <{desc}> --model brain-ldm-demo --component diffusion"
            + (" --allow-unverified" if "allow" not in desc else ""),
            imp(f"{{d}}/ckpt{ext}", *([] if "no --allow-unverified" in desc else ["--allow-unverified"])),
            setup=lambda ctx, make=make, ext=ext: make(ctx.d / f"ckpt{ext}"),
        )
    cli(
        c,
        "models import <checkpoint> without --model",
        ["models", "import", "{d}/ckpt.safetensors"],
        setup=lambda ctx: shutil.copy(D, ctx.d / "ckpt.safetensors"),
    )
    cli(
        c,
        "models import <checkpoint> --model brain-ldm-demo without --component (2 weights)",
        ["models", "import", "{d}/ckpt.safetensors", "--model", "brain-ldm-demo"],
        setup=lambda ctx: shutil.copy(D, ctx.d / "ckpt.safetensors"),
    )
    cli(
        c,
        "models import <checkpoint> --component bogus",
        imp("{d}/ckpt.safetensors", "--component", "bogus"),
        setup=lambda ctx: shutil.copy(D, ctx.d / "ckpt.safetensors"),
    )
    cli(
        c,
        "models import <checkpoint> --model no-such-model",
        ["models", "import", "{d}/ckpt.safetensors", "--model", "no-such-model", "--component", "diffusion"],
        setup=lambda ctx: shutil.copy(D, ctx.d / "ckpt.safetensors"),
    )
    cli(
        c,
        "models import <FIFO> (must not hang)",
        imp("{d}/fifo.pt", "--allow-unverified"),
        setup=lambda ctx: os.mkfifo(ctx.d / "fifo.pt"),
        timeout=60,
    )
    cli(c, "models import /dev/zero (must not hang)", imp("/dev/zero", "--allow-unverified"), timeout=60)
    cli(c, "models import /etc/passwd", imp("/etc/passwd", "--allow-unverified"))
    cli(c, "models import <does not exist>", ["models", "import", "{d}/nothing"])
    cli(c, "models import / (root folder)", ["models", "import", "/"])
    cli(c, "models import <path with a newline, missing> (one-line error?)", ["models", "import", "{d}/no\nthing"])
    cli(
        c,
        "models import <shipped folder brain-ldm-demo> (its own card)",
        ["models", "import", str(SHIPPED / "brain-ldm-demo")],
        expect="either",
    )

    # ---- bad cards through models import ---------------------------------------------------------
    for desc, edit, raw in [
        ("norm_eps as a string", lambda k: (set_field(k, "id", "my-model"), ae(k, "norm_eps", "1e-6")), None),
        (
            "autoencoder channels [80000]*3",
            lambda k: (set_field(k, "id", "my-model"), ae(k, "channels", [80000] * 3)),
            None,
        ),
        (
            "latent.shape huge",
            lambda k: (set_field(k, "id", "my-model"), set_field(k, "latent.shape", [8, 100000, 100000, 100000])),
            None,
        ),
        (
            "num_train_timesteps 10**13",
            lambda k: (set_field(k, "id", "my-model"), set_field(k, "scheduler.kwargs.num_train_timesteps", 10**13)),
            None,
        ),
        ("JSON nested 200000 deep", None, deep_json()),
        ("card.json not UTF-8", None, b'{"id": "caf\xe9"}'),
        ("JSON is a list", None, "[]"),
        ("id with a newline", lambda k: (set_field(k, "id", "my\nmodel"), set_field(k, "kind", "x")), None),
        (
            "kwargs value '$...' expression",
            lambda k: (
                set_field(k, "id", "my-model"),
                unet(k, "num_res_blocks", f"$__import__('os').system('touch {marker('dollar-import')}')"),
            ),
            None,
        ),
        (
            "missing weights files",
            lambda k: (
                set_field(k, "id", "my-model"),
                set_field(k, "weights.autoencoder.file", "nope.safetensors"),
                set_field(k, "weights.diffusion.file", "nope2.safetensors"),
            ),
            None,
        ),
    ]:
        cli(
            c,
            f"models import <folder: {desc}>",
            ["models", "import", "{d}/model"],
            setup=lambda ctx, edit=edit, raw=raw: model_folder(ctx, edit=edit, raw=raw),
        )
    cli(
        c,
        "models import <folder: new id my-demo, no checksums> (valid custom model)",
        ["models", "import", "{d}/model"],
        expect="good",
        setup=lambda ctx: model_folder(ctx, strip_checksums=True, edit=lambda k: set_field(k, "id", "my-demo")),
        check=lambda ctx, run: (
            None if (ctx.home / "models" / "my-demo" / "install.json").is_file() else "install.json not written"
        ),
    )
    cli(
        c,
        "models import <card.json path of a valid custom model>",
        ["models", "import", "{d}/model/card.json"],
        expect="good",
        setup=lambda ctx: model_folder(ctx, strip_checksums=True, edit=lambda k: set_field(k, "id", "my-demo")),
    )
    # ---- --home ----------------------------------------------------------------------------------
    custom = lambda ctx: model_folder(ctx, strip_checksums=True, edit=lambda k: set_field(k, "id", "my-demo"))  # noqa: E731
    cli(
        c,
        "models import --home <a file>",
        ["models", "import", "{d}/model"],
        home="{d}/homefile",
        setup=lambda ctx: (custom(ctx), (ctx.d / "homefile").write_text("x")),
    )
    cli(
        c,
        "models import --home /proc/synthbrain-home",
        ["models", "import", "{d}/model"],
        home="/proc/synthbrain-home",
        setup=custom,
    )
    cli(
        c,
        "models import --home /sys/synthbrain-home",
        ["models", "import", "{d}/model"],
        home="/sys/synthbrain-home",
        setup=custom,
    )
    cli(
        c,
        "models list --home <a file>",
        ["models", "list"],
        expect="either",
        home="{d}/homefile",
        setup=lambda ctx: (ctx.d / "homefile").write_text("x"),
    )
    cli(
        c,
        "models verify --home <a file>",
        ["models", "verify"],
        expect="either",
        home="{d}/homefile",
        setup=lambda ctx: (ctx.d / "homefile").write_text("x"),
    )
    # ---- models misc -----------------------------------------------------------------------------
    cli(c, "models list", ["models", "list"], expect="good")
    cli(c, "models path", ["models", "path"], expect="good")
    cli(c, "models path brain-ldm-demo", ["models", "path", "brain-ldm-demo"], expect="good")
    cli(c, "models verify", ["models", "verify"], expect="good")
    cli(c, "models path ../../etc", ["models", "path", "../../etc"])
    cli(c, "models verify no-such-model", ["models", "verify", "no-such-model"])
    cli(c, "models download no-such-model", ["models", "download", "no-such-model"])
    cli(c, "models download brainspade3d-image (not public)", ["models", "download", "brainspade3d-image"])
    cli(
        c,
        "models download labels-demo (shipped: nothing to do)",
        ["models", "download", "labels-demo"],
        expect="either",
    )
    cli(c, "models frobnicate", ["models", "frobnicate"])

    def damaged_install(content: bytes):
        def setup(ctx):
            f = ctx.home / "models" / "brain-ldm-demo"
            f.mkdir(parents=True)
            (f / "install.json").write_bytes(content)

        return setup

    def shipped_weights_used(ctx: Ctx, run: Run):
        """A damaged cache entry for a shipped id gives way to the verified shipped copy (not to the cache)."""
        problem = check_volume("out.nii.gz")(ctx, run)
        if problem:
            return problem
        rec = sidecar(ctx.d / "out.json") or {}
        used = {k: v.get("sha256") for k, v in (rec.get("weights") or {}).items()}
        locations = {v.get("location") for v in (rec.get("weights") or {}).values()}
        if used != SHIPPED_SHA["brain-ldm-demo"] or locations != {"shipped"}:
            return f"weights used: {used} from {locations}, not the shipped copy"
        return None

    for desc, content in [
        ("a list", b"[1]"),
        ("not UTF-8", b'{"weights": "\xff"}'),
        ("nested 200000 deep", deep_json().encode()),
        ("weights: entries missing fields", b'{"weights": {"diffusion": {"file": "x"}}}'),
    ]:
        cli(
            c,
            f"generate with cache install.json that is {desc} (the shipped copy runs)",
            GEN(),
            expect="good",
            setup=damaged_install(content),
            check=shipped_weights_used,
        )

    # ---- model-id takeover -------------------------------------------------------------------------
    define_takeover(c)
    # ---- MONAI bundles -------------------------------------------------------------------------------
    define_bundles(c)
