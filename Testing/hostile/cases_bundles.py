"""Case table 3 (continued): MONAI bundles as distributed, and hostile ones."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any, Callable

from hostile.fixtures import SHIPPED, deep_json, write_payload
from hostile.harness import (
    BROKEN,
    OK_ACCEPT,
    Ctx,
    add,
    changes,
    cli,
    judge,
    marker,
    model_folder,
    run_cli,
    short,
    snapshot,
    watched,
)


def define_bundles(c: str) -> None:
    from SynthBrainLib.models.cards import builtin_cards

    ldm = builtin_cards()["brain-ldm"]

    def bundle(
        ctx: Ctx, config: Any, models: dict[str, Callable[[Path], Any]] | None = None, name: str = "bundle"
    ) -> Path:
        b = ctx.d / name
        (b / "configs").mkdir(parents=True)
        (b / "models").mkdir()
        cfg = b / "configs" / "inference.json"
        if isinstance(config, bytes):
            cfg.write_bytes(config)
        else:
            cfg.write_text(config if isinstance(config, str) else json.dumps(config))
        for fname, make in (models or {}).items():
            make(b / "models" / fname)
        return b

    def ldm_config(edit: Callable | None = None) -> dict:
        cfg = {}
        for name, key in ldm.source["network_keys"].items():
            spec = ldm.networks[name]
            cfg[key] = {"_target_": f"generative.networks.nets.{spec.cls}", **copy.deepcopy(dict(spec.kwargs))}
        cfg["device"] = "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')"
        if edit:
            edit(cfg)
        return cfg

    def imp_bundle(*extra):
        return ["models", "import", "{d}/bundle", *extra]

    garbage = {"autoencoder.pt": lambda p: p.write_bytes(b"x" * 100), "model.pt": lambda p: p.write_bytes(b"y" * 100)}
    cli(
        c,
        "models import <bundle: inference.json is a list>",
        imp_bundle(),
        setup=lambda ctx: bundle(ctx, "[1, 2]", garbage),
    )
    cli(
        c,
        "models import <bundle: inference.json is a string>",
        imp_bundle(),
        setup=lambda ctx: bundle(ctx, '"autoencoder_def"', garbage),
    )
    cli(
        c,
        "models import <bundle: inference.json not UTF-8>",
        imp_bundle(),
        setup=lambda ctx: bundle(ctx, b'{"autoencoder_def": "\xff"}', garbage),
    )
    cli(
        c,
        "models import <bundle: inference.json nested 200000 deep>",
        imp_bundle(),
        setup=lambda ctx: bundle(ctx, deep_json(), garbage),
    )
    cli(c, "models import <bundle: inference.json {}>", imp_bundle(), setup=lambda ctx: bundle(ctx, {}, garbage))
    cli(
        c,
        "models import <bundle: network defs as '$...' expressions>",
        imp_bundle(),
        setup=lambda ctx: bundle(
            ctx,
            ldm_config(
                lambda cfg: cfg["autoencoder_def"].update(
                    spatial_dims=f"$__import__('os').system('touch {marker('dollar-bundle')}') or 3"
                )
            ),
            garbage,
        ),
    )
    cli(
        c,
        "models import <bundle: Brain LDM defs, weights missing>",
        imp_bundle(),
        setup=lambda ctx: bundle(ctx, ldm_config()),
    )
    cli(
        c,
        "models import <bundle: Brain LDM defs, garbage weights> (md5 mismatch)",
        imp_bundle(),
        setup=lambda ctx: bundle(ctx, ldm_config(), garbage),
    )
    cli(
        c,
        "models import <bundle: Brain LDM defs, pickle payload model.pt> --allow-unverified",
        imp_bundle("--allow-unverified"),
        timeout=300,
        setup=lambda ctx: bundle(
            ctx,
            ldm_config(),
            {
                "autoencoder.pt": lambda p: write_payload(p, "zip", marker("bundle-payload-ae")),
                "model.pt": lambda p: write_payload(p, "legacy", marker("bundle-payload-unet")),
            },
        ),
    )

    # a custom card that describes a MONAI bundle, with bundle_path outside the bundle
    def evil_bundle_card(bundle_paths: Callable[[Ctx], dict], symlink_models: bool = False):
        def fn(ctx: Ctx):
            outside = ctx.d / "outside"
            outside.mkdir()
            for f in ("autoencoder.safetensors", "diffusion.safetensors"):
                shutil.copy(SHIPPED / "brain-ldm-demo" / f, outside / f)
            paths = bundle_paths(ctx)

            def edit(k):
                k["id"] = "evil-bundle"
                k["source"] = {
                    "type": "monai-bundle",
                    "bundle": "evil",
                    "network_keys": {"autoencoder": "autoencoder_def", "diffusion": "diffusion_def"},
                }
                for key, bp in paths.items():
                    k["weights"][key]["bundle_path"] = bp
                return k

            folder = model_folder(ctx, edit=edit, name="evil-card")
            before = snapshot(watched(ctx))
            run = run_cli(["--home", str(ctx.home), "models", "import", str(folder)], ctx.d)
            diff = changes(before, snapshot(watched(ctx)))
            if run.rc != 0:
                return [("import of the card", *judge("bad", run, diff, ctx))]
            recs = [
                (
                    "import of the card",
                    OK_ACCEPT,
                    "card with bundle_path " + short(paths) + " accepted (used only for bundle imports)",
                )
            ]
            card = json.loads((folder / "card.json").read_text())
            cfg = {
                key: {"_target_": card["networks"][name]["class"], **card["networks"][name]["kwargs"]}
                for name, key in (("autoencoder", "autoencoder_def"), ("diffusion", "diffusion_def"))
            }
            b = ctx.d / "bundle"
            (b / "configs").mkdir(parents=True)
            (b / "configs" / "inference.json").write_text(json.dumps(cfg))
            if symlink_models:
                (b / "models").symlink_to(outside)
            else:
                (b / "models").mkdir()
            home_before = snapshot([ctx.home])
            run2 = run_cli(["--home", str(ctx.home), "models", "import", str(b), "--model", "evil-bundle"], ctx.d)
            diff2 = changes(home_before, snapshot([ctx.home]))
            if run2.rc == 0:
                recs.append(
                    (
                        "then import of a bundle",
                        BROKEN,
                        short(
                            f"weights read from outside the bundle folder ({paths}) and installed: exit 0, "
                            f"{len(diff2)} cache changes"
                        ),
                    )
                )
            else:
                recs.append(("then import of a bundle", *judge("bad", run2, diff2, ctx)))
            return recs

        return fn

    add(
        c,
        "bundle card with bundle_path '../outside/...' (path traversal)",
        evil_bundle_card(
            lambda ctx: {
                "autoencoder": "../outside/autoencoder.safetensors",
                "diffusion": "../outside/diffusion.safetensors",
            }
        ),
    )
    add(
        c,
        "bundle card with absolute bundle_path",
        evil_bundle_card(
            lambda ctx: {k: str(ctx.d / "outside" / f"{k}.safetensors") for k in ("autoencoder", "diffusion")}
        ),
    )
    add(
        c,
        "bundle card with bundle_path 'models/../../outside/...'",
        evil_bundle_card(
            lambda ctx: {
                "autoencoder": "models/../../outside/autoencoder.safetensors",
                "diffusion": "models/../../outside/diffusion.safetensors",
            }
        ),
    )
    add(
        c,
        "bundle whose models/ is a symlink to a folder outside the bundle",
        evil_bundle_card(
            lambda ctx: {"autoencoder": "models/autoencoder.safetensors", "diffusion": "models/diffusion.safetensors"},
            symlink_models=True,
        ),
    )

    def good_bundle(ctx: Ctx):
        """A custom bundle card with normal bundle paths, and a real bundle folder: must import."""

        def edit(k):
            k["id"] = "my-bundle"
            k["source"] = {
                "type": "monai-bundle",
                "bundle": "mine",
                "network_keys": {"autoencoder": "autoencoder_def", "diffusion": "diffusion_def"},
            }
            for key in ("autoencoder", "diffusion"):
                k["weights"][key]["bundle_path"] = f"models/{key}.safetensors"
            return k

        folder = model_folder(ctx, edit=edit, name="card")
        run = run_cli(["--home", str(ctx.home), "models", "import", str(folder)], ctx.d)
        if run.rc != 0:
            return judge("good", run, [], ctx)
        card = json.loads((folder / "card.json").read_text())
        b = ctx.d / "bundle"
        (b / "configs").mkdir(parents=True)
        (b / "models").mkdir()
        (b / "configs" / "inference.json").write_text(
            json.dumps(
                {
                    key: {"_target_": card["networks"][name]["class"], **card["networks"][name]["kwargs"]}
                    for name, key in (("autoencoder", "autoencoder_def"), ("diffusion", "diffusion_def"))
                }
            )
        )
        for key in ("autoencoder", "diffusion"):
            shutil.copy(SHIPPED / "brain-ldm-demo" / f"{key}.safetensors", b / "models" / f"{key}.safetensors")
        run2 = run_cli(["--home", str(ctx.home), "models", "import", str(b), "--model", "my-bundle"], ctx.d)
        return judge("good", run2, [], ctx)

    add(c, "custom bundle card + matching bundle folder (valid)", good_bundle)
