"""Writing the model store: importing a MONAI bundle, a model folder or one checkpoint, installing
its weights into the cache, and downloading published weights. A file already there with the same
sha256 is never copied again, and nothing is written unless every file passes its checks.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from ..errors import CardError, CheckpointError, ModelNotFoundError, OutputError, Remedy
from ..outputs.atomic_files import replaced_atomically
from ..outputs.digests import file_digests
from .cards import ModelCard, check_network_arguments, load_card
from .download import download_file
from .store_reading import CARD_FILE, INSTALL_FILE, InstalledModel, StoreReader, card_digest, checksum_status


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _atomic_write_text(path: Path, text: str) -> None:
    with replaced_atomically(path, suffix=".tmp") as tmp:
        tmp.write_text(text, encoding="utf-8")


class StoreWriter(StoreReader):
    """Import, install and download models; the writing half of :class:`~.store.ModelStore`."""

    # ---- importing -------------------------------------------------------------------------
    def import_path(
        self,
        path: str | Path,
        *,
        model: str | None = None,
        component: str | None = None,
        allow_unverified: bool = False,
        check_load: bool = True,
        check_card: Callable[[ModelCard], object] | None = None,
    ) -> InstalledModel:
        """Import a MONAI bundle folder, a model folder (card.json + weights) or one checkpoint.

        Args:
            path: the bundle folder (``configs/inference.json`` + ``models/*.pt``), a folder with
                ``card.json``, a checkpoint file (``.pt``/``.pth``/``.ckpt``/``.safetensors``), or -
                with ``model`` - a folder holding the card's weight files under their upstream names
                (NV-Generate's ``models/`` as its download script leaves it, or the repository above it).
            model: card id; required for a single checkpoint, optional for a bundle (it is
                recognised from its network definitions).
            component: which of the card's weights a single checkpoint is (e.g. ``diffusion``).
            allow_unverified: accept files whose checksum differs from the card's published one
                (your own fine-tuned weights); recorded as ``mismatch-accepted``.
            check_load: build each network and load its checkpoint strictly before installing.
            check_card: the rules of the card's kind, raising :class:`CardError`; they belong to its
                pipeline class, above this layer: pass ``SynthBrainLib.pipelines.pipeline_class``
                (the CLI and the Slicer module do). Without it a card that breaks them is refused
                when it is loaded.

        Nothing is written to the cache unless every file passes.
        """
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ModelNotFoundError(f"import path {path!r} is not a file or folder path")
        for name, value in (("model", model), ("component", component)):
            if value is not None and not isinstance(value, str):
                raise ModelNotFoundError(
                    f"{name} {value!r} is not a {'model id' if name == 'model' else 'weight name'}"
                )
        path = Path(path).expanduser()
        if not path.exists():
            raise ModelNotFoundError(f"{path} does not exist")
        if path.is_file() and path.name in (CARD_FILE, "inference.json"):
            path = (
                path.parent.parent if path.name == "inference.json" and path.parent.name == "configs" else path.parent
            )  # the folder was meant
        if path.is_dir() and (path / "configs" / "inference.json").is_file():
            card, sources = self._bundle_sources(path, model)
        elif path.is_dir() and (path / CARD_FILE).is_file():
            card = self._folder_card(path, model)
            sources = {k: path / w.file for k, w in card.weights.items() if (path / w.file).is_file()}
            if not sources:
                raise ModelNotFoundError(
                    f"{path} has a card but none of its weight files "
                    f"({', '.join(w.file for w in card.weights.values())})"
                )
        elif path.is_dir() and model:
            card = self.card(model)
            sources = self._named_files(path, card)
        elif path.is_file():
            if not model:
                raise ModelNotFoundError(
                    f"importing the single checkpoint {path.name} needs the model it belongs to",
                    remedy=Remedy("name_the_model"),
                )
            card = self.card(model)
            keys = list(card.weights)
            if component is None and len(keys) == 1:
                component = keys[0]
            if component not in card.weights:
                raise ModelNotFoundError(
                    f"component {component!r} is not a weight of {card.id}; choose one of {', '.join(keys)}"
                )
            sources = {component: path}
        else:
            raise ModelNotFoundError(
                f"{path} is neither a MONAI bundle folder, a model folder with {CARD_FILE}, a checkpoint file, "
                "nor (with a model id) a folder of a model's weight files"
            )
        if check_card is not None:
            check_card(card)
        return self._install(
            card,
            sources,
            source_label=str(path),
            allow_unverified=allow_unverified,
            check_load=check_load,
            copy_card=path.is_dir() and (path / CARD_FILE).is_file(),
        )

    @staticmethod
    def _named_files(folder: Path, card: ModelCard) -> dict[str, Path]:
        """The card's weight files found in ``folder`` by their names (``file``, or ``bundle_path``
        below the folder); symlinks out of the folder are refused."""
        sources = {}
        for key, weight in card.weights.items():
            for candidate in (folder / weight.file, folder / (weight.bundle_path or weight.file)):
                if candidate.is_file():
                    if not candidate.resolve().is_relative_to(folder.resolve()):
                        raise CardError(f"{candidate} leads outside the folder {folder}")
                    sources[key] = candidate
                    break
        if not sources:
            names = ", ".join(w.bundle_path or w.file for w in card.weights.values())
            raise ModelNotFoundError(f"{folder} holds none of the weight files of {card.id} ({names})")
        return sources

    def _folder_card(self, folder: Path, model: str | None) -> ModelCard:
        """The card a model folder is imported under: its own, or renamed to ``model``.

        The id of a built-in or shipped model is not free: a folder whose card claims it must be
        that very card (its weights are then checked against the published checksums). Any other
        card is imported under an id of the user's choosing (``model``), never under a taken one,
        so nobody's weights are ever run under a trusted name.
        """
        card = load_card(folder / CARD_FILE)
        reserved = self.reserved_cards()
        if model and model != card.id:
            if model in reserved:
                raise CardError(
                    f"{model!r} is the id of a {self._kind_of_reserved(model)} model", remedy=Remedy("new_model_id")
                )
            return ModelCard.from_dict({**card.to_dict(), "id": model})
        if card.id in reserved and card_digest(card) != card_digest(reserved[card.id]):
            raise CardError(
                f"{folder / CARD_FILE} claims the id {card.id!r} of a {self._kind_of_reserved(card.id)} "
                "model but describes other weights or settings",
                remedy=Remedy("new_model_id"),
            )
        return card

    def _bundle_sources(self, bundle: Path, model: str | None) -> tuple[ModelCard, dict[str, Path]]:
        """Match a bundle's configs/inference.json (read as JSON, never executed) to a card."""
        try:
            config = json.loads((bundle / "configs" / "inference.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise CardError(
                f"{bundle}/configs/inference.json cannot be read as JSON: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
        if not isinstance(config, dict):
            raise CardError(
                f"{bundle}/configs/inference.json holds a JSON {type(config).__name__}; a MONAI bundle "
                "config is a JSON object"
            )
        candidates = [c for c in self.cards().values() if c.source.get("type") == "monai-bundle"]
        if model:
            candidates = [self.card(model)]
        problems = []
        for card in candidates:
            diff = _bundle_difference(card, config)
            if diff is None:
                sources = {}
                for key, weight in card.weights.items():
                    src = bundle / (weight.bundle_path or f"models/{weight.file}")
                    if not src.resolve().is_relative_to(bundle.resolve()):  # a symlink out of the bundle
                        raise CardError(f"{weight.bundle_path or weight.file} leads outside the bundle {bundle}")
                    if not src.is_file():
                        raise ModelNotFoundError(
                            f"bundle {bundle} lacks {weight.bundle_path or weight.file} (weights '{key}' of {card.id})"
                        )
                    sources[key] = src
                return card, sources
            problems.append(f"{card.id}: {diff}")
        detail = "; ".join(problems) if problems else "no card describes a MONAI bundle"
        raise CardError(f"bundle {bundle} does not match a known model ({detail})")

    def _install(
        self,
        card: ModelCard,
        sources: dict[str, Path],
        *,
        source_label: str,
        allow_unverified: bool,
        check_load: bool,
        copy_card: bool,
    ) -> InstalledModel:
        records: dict[str, tuple[Path, dict[str, str], str]] = {}
        for key, src in sources.items():
            weight = card.weights[key]
            digests = file_digests(src, ("sha256", "md5"))
            status = checksum_status(weight, digests)
            if status is None:
                if not allow_unverified:
                    expected = f"sha256 {weight.sha256}" if weight.sha256 else f"md5 {weight.md5}"
                    got = f"sha256 {digests['sha256']}" if weight.sha256 else f"md5 {digests['md5']}"
                    raise CheckpointError(
                        f"{src.name} is not the published {card.id} '{key}' checkpoint ({got}, expected {expected})",
                        remedy=Remedy("allow_unverified"),
                    )
                status = "mismatch-accepted"
            records[key] = (src, digests, status)
        if (
            any(status == "mismatch-accepted" for _, _, status in records.values())
            and self._complete_shipped(card.id) is not None
        ):
            # A complete shipped model is used in place: other weights under its id would be ignored
            # (or, worse, shadow it); they belong under an id of their own.
            raise CardError(
                f"{card.id!r} is a shipped model, complete with its own weights; other weights go in a model "
                "folder (card.json + weights)",
                remedy=Remedy("new_model_id"),
            )
        if check_load:
            self._check_loadable(card, {k: v[0] for k, v in records.items()})
        try:
            return self._write_install(card, records, source_label, copy_card)
        except OSError as exc:
            raise self._cache_error(exc) from None

    def _cache_error(self, exc: OSError) -> OutputError:
        return OutputError(
            f"cannot write the model cache {self.models_dir}: {exc.strerror or exc}", remedy=Remedy("other_home")
        )

    def _cache_folder(self, card: ModelCard) -> Path:
        """``models/<id>`` in the cache, created (a one-line error when the cache cannot be written)."""
        folder = self.models_dir / card.id
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._cache_error(exc) from None
        return folder

    def _write_record(self, folder: Path, card: ModelCard, entries: dict) -> None:
        """``install.json``: each weight file, its sha256 and status, and the card it was verified against."""
        record = {
            "model": card.id,
            "card_version": card.version,
            "card_sha256": card_digest(card),
            "installed": _now(),
            "weights": entries,
        }
        _atomic_write_text(folder / INSTALL_FILE, json.dumps(record, indent=2))

    def _write_install(self, card: ModelCard, records: dict, source_label: str, copy_card: bool) -> InstalledModel:
        folder = self._cache_folder(card)
        install_path = folder / INSTALL_FILE
        existing = self._install_record(folder) if install_path.is_file() else {}
        if existing and self._install_card_digest(folder) not in (None, card_digest(card)):
            existing = {}  # files verified against another card are not kept as part of this one
        entries = dict(existing)
        for key, (src, digests, status) in records.items():
            name = (
                card.weights[key].file
                if src.suffix != ".safetensors"
                else Path(card.weights[key].file).stem + ".safetensors"
            )
            dest = folder / name
            if not (
                dest.is_file()
                and dest.stat().st_size == src.stat().st_size
                and file_digests(dest)["sha256"] == digests["sha256"]
            ):
                if src.resolve() != dest.resolve():
                    _atomic_copy(src, dest)
            stat = dest.stat()
            entries[key] = {
                "file": dest.name,
                "sha256": digests["sha256"],
                "size": stat.st_size,
                "mtime": stat.st_mtime,
                "checksum": status,
                "source": f"imported from {source_label}",
            }
        if copy_card and card.id not in self.reserved_cards():
            _atomic_write_text(folder / CARD_FILE, json.dumps(card.to_dict(), indent=2))
        self._write_record(folder, card, entries)
        return self.locate(card.id, require_complete=False)

    @staticmethod
    def _check_loadable(card: ModelCard, paths: dict[str, Path]) -> None:
        """Build each network whose weights are being imported and load them strictly."""
        # torch is imported here, not with the store: reading cards and locating models (the command
        # line's argument checks, the Slicer module before its dependencies) must not cost seconds.
        from .checkpoints import load_weights, read_state_dict, read_style_codes, read_template
        from .networks import build_network

        check_network_arguments(card.id, card.networks)

        for spec in card.networks.values():
            if spec.weights in paths:
                net = build_network(spec, card.id)
                load_weights(
                    net,
                    read_state_dict(paths[spec.weights]),
                    card.weights[spec.weights].format,
                    name=f"{paths[spec.weights].name} ({card.id} {spec.weights})",
                )
                del net
        if card.sequences is not None and card.sequences.weights in paths:
            read_style_codes(card, paths[card.sequences.weights])
        if card.template is not None and card.template.weights in paths:
            read_template(card, paths[card.template.weights])

    # ---- downloading -----------------------------------------------------------------------
    def download(
        self,
        model: str,
        *,
        progress: Callable[[str, int, int | None], None] | None = None,
        accept_licence: bool = False,
    ) -> InstalledModel:
        """Download the card's weight files that are not installed yet (resuming partial ones).

        ``accept_licence``: the user has read the card's licence and accepts it; required for a
        card whose ``source.licence_acceptance`` is true (NV-Generate: the NVIDIA Open Model License),
        checked before anything is fetched.
        """

        card = self.card(model)
        check_licence_accepted(card, accept_licence)
        installed = self.locate(model, require_complete=False)
        todo = [k for k in installed.missing]
        if not todo:
            return installed
        no_url = [card.weights[k].file for k in todo if not card.weights[k].url]
        if no_url:
            why = "the weights are not public" if not card.weights_public else "the card gives no URL"
            raise ModelNotFoundError(
                f"cannot download {', '.join(no_url)} of {card.id}: {why}",
                remedy=Remedy("install_weights", model=card.id, detail="import"),
            )
        folder = self._cache_folder(card)
        install_path = folder / INSTALL_FILE
        entries = self._install_record(folder) if install_path.is_file() else {}
        for key in todo:
            weight = card.weights[key]
            dest = folder / weight.file
            cb = (lambda done, total, _f=weight.file: progress(_f, done, total)) if progress else None
            digest = download_file(weight.url, dest, sha256=weight.sha256, md5=weight.md5, progress=cb)
            stat = dest.stat()
            entries[key] = {
                "file": dest.name,
                "sha256": digest,
                "size": stat.st_size,
                "mtime": stat.st_mtime,
                "checksum": "verified" if weight.has_checksum else "unpublished",
                "source": f"downloaded from {weight.url}",
            }
            self._write_record(folder, card, entries)
        return self.locate(model, require_complete=False)


def check_licence_accepted(card: ModelCard, accept_licence: bool) -> None:
    """A card whose ``source.licence_acceptance`` is true is downloaded only when the user accepts its
    licence (``accept_licence=True``); torch-free, so a face can refuse before it starts a download.

    Raises:
        ModelNotFoundError: naming the licence, with the ``accept_licence`` remedy.
    """
    if card.source.get("licence_acceptance") and accept_licence is not True:
        raise ModelNotFoundError(
            f"{card.id}'s weights come under the {card.source.get('licence_name') or 'licence in its card'}, "
            "which you must accept first",
            remedy=Remedy("accept_licence", model=card.id),
        )


def _atomic_copy(src: Path, dest: Path) -> None:
    with replaced_atomically(dest, suffix=".part") as tmp:
        shutil.copyfile(src, tmp)


def _bundle_difference(card: ModelCard, config: dict) -> str | None:
    """``None`` when the bundle's network definitions equal the card's, else the first difference."""
    keys = card.source.get("network_keys", {})
    for name, spec in card.networks.items():
        config_key = keys.get(name)
        definition = config.get(config_key) if config_key else None
        if not isinstance(definition, dict):
            return f"configs/inference.json has no '{config_key}' network definition"
        target = str(definition.get("_target_", ""))
        if target.rsplit(".", 1)[-1] != spec.cls:
            return f"'{config_key}' is {target or 'unnamed'}, the card expects {spec.cls}"
        given = {k: v for k, v in definition.items() if not k.startswith("_")}
        for k in sorted(set(given) | set(spec.kwargs)):
            if _normalise(given.get(k)) != _normalise(spec.kwargs.get(k)):
                return (
                    f"'{config_key}.{k}' is {json.dumps(given.get(k))}, the card has {json.dumps(spec.kwargs.get(k))}"
                )
    return None


def _normalise(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value
