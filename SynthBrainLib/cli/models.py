"""``synthbrain models list | import | download | verify | path``: the model store from the command line."""

from __future__ import annotations

import sys
from typing import Any

from ..errors import SynthBrainError
from .command import CommandParser
from .running import open_store


def register(sub) -> None:
    models = sub.add_parser(
        "models", help="list, import, download, verify models", description="Manage the model cache."
    )
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION", parser_class=CommandParser)
    m = msub.add_parser("list", help="show known models, whether their weights are installed, and where")
    m.set_defaults(handler=list_models)
    m = msub.add_parser(
        "import",
        help="import a MONAI bundle folder, a model folder or a checkpoint",
        description=(
            "Import weights into the cache (copied once; checksums verified; loaded strictly before anything is "
            "written)."
        ),
    )
    m.add_argument("path", metavar="PATH")
    m.add_argument(
        "--model", metavar="ID", default=None, help="card id (needed for a single checkpoint; recognised for a bundle)"
    )
    m.add_argument(
        "--component",
        metavar="KEY",
        default=None,
        help="which weights a single checkpoint holds, e.g. autoencoder or diffusion",
    )
    m.add_argument(
        "--allow-unverified",
        action="store_true",
        help="accept weights whose checksum differs from the published one (your own weights); recorded in provenance",
    )
    m.set_defaults(handler=import_model)
    m = msub.add_parser(
        "download",
        help="download a model's weights (checksum verified, resumable); 'brain-extraction' fetches the brain "
        "extractor (deepbet 1.0.2, MIT) used for scans with skull",
    )
    m.add_argument("model", metavar="ID")
    m.add_argument("--quiet", action="store_true")
    m.add_argument(
        "--accept-licence",
        action="store_true",
        help="accept the model's licence (shown before the download; required where the card says so, e.g. "
        "nv-generate-mr-brain: NVIDIA Open Model License)",
    )
    m.set_defaults(handler=download)
    m = msub.add_parser("verify", help="re-hash installed weight files")
    m.add_argument("model", metavar="ID", nargs="?", default=None)
    m.set_defaults(handler=verify)
    m = msub.add_parser("path", help="print the cache folder, or a model's folder")
    m.add_argument("model", metavar="ID", nargs="?", default=None)
    m.set_defaults(handler=path)


def list_models(args) -> int:
    store = open_store(args)
    rows = [("MODEL", "KIND", "STATUS", "SIZE", "WHERE")]
    for model_id, m, problem in store.list():
        if m is None:
            rows.append(
                (model_id, store.card(model_id).kind, "changed since install: run 'synthbrain models verify'", "-", "-")
            )
            continue
        if m.complete:
            status = {"cache": "installed", "shipped": "shipped", "folder": "folder"}[m.location]
        elif m.weights:
            status = f"partial ({len(m.weights)}/{len(m.card.weights)} files)"
        else:
            status = "not installed" if m.card.weights_public else "not installed (weights not public)"
        size = f"{m.size_bytes / 1e6:.1f} MB" if m.weights else "-"
        rows.append((m.card.id, m.card.kind, status, size, str(m.folder) if m.weights else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"cache: {store.models_dir}")
    return 0


def import_model(args) -> int:
    from ..pipelines import pipeline_class  # torch: only once a model is imported

    installed = open_store(args).import_path(
        args.path,
        model=args.model,
        component=args.component,
        allow_unverified=args.allow_unverified,
        check_card=pipeline_class,
    )
    for key, rec in installed.weights.items():
        print(f"{installed.card.id} {key}: {rec.path} (sha256 {rec.sha256[:12]}..., {rec.checksum})")
    if not installed.complete:
        print(
            f"{installed.card.id} still needs: {', '.join(installed.card.weights[k].file for k in installed.missing)}"
        )
    return 0


def download(args) -> int:
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(name: str, done: int, total: int | None) -> None:
        if args.quiet:
            return
        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = tqdm(total=total, desc=name, unit="B", unit_scale=True, file=sys.stderr)
        bar.update(done - bar.n)

    try:
        if args.model == BRAIN_EXTRACTION:
            return _download_extractor(args, progress)
        store = open_store(args)
        card = store.card(args.model)
        if card.weights_public:  # what the user is about to fetch comes under this licence
            print(f"{card.id}: licence: {card.licence}", file=sys.stderr)
            print(f"{card.id}: cite: {card.citation}", file=sys.stderr)
        installed = store.download(args.model, progress=progress, accept_licence=args.accept_licence)
    finally:
        for bar in bars.values():
            bar.close()
    for key, rec in installed.weights.items():
        print(f"{installed.card.id} {key}: {rec.path} ({rec.checksum})")
    return 0


#: ``models download`` of this name fetches the brain extractor's weights, not a model's.
BRAIN_EXTRACTION = "brain-extraction"


def _download_extractor(args, progress) -> int:
    from ..extraction.weights import DEEPBET, install_weights, weights_home
    from ..outputs.digests import file_sha256

    print(f"{DEEPBET.name} {DEEPBET.version}: licence {DEEPBET.licence}; cite {DEEPBET.citation}", file=sys.stderr)
    with weights_home(args.home):
        path = install_weights(DEEPBET, progress=lambda done, total: progress(DEEPBET.name, done, total))
    print(f"{BRAIN_EXTRACTION}: {path} (sha256 {file_sha256(path)})")
    return 0


def verify(args) -> int:
    rows = open_store(args).verify(args.model)
    bad = 0
    for model, file, status in rows:
        print(f"{model}  {file}  {status}")
        bad += not status.startswith("ok")
    if not rows:
        print("no installed weights to verify")
    if bad:
        raise SynthBrainError(f"{bad} file(s) failed verification")
    return 0


def path(args) -> int:
    store = open_store(args)
    print(store.locate(args.model, require_complete=False).folder if args.model else store.models_dir)
    return 0
