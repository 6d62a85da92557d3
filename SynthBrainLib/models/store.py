"""The model store: where cards and weights live, and how they get there.

Three places hold models:

* the **cache** (``$SYNTHBRAIN_HOME/models/<id>/``, default ``~/.cache/synthbrain``): models
  imported from a MONAI bundle, a checkpoint or a model folder, or downloaded. Each folder has the
  weight files and ``install.json`` (what each file is, its sha256 and whether it matched a
  published checksum). A file already there with the same sha256 is never copied again.
* **shipped** models (``Resources/Models/<id>/`` beside the package, or the folders in
  ``$SYNTHBRAIN_SHIPPED_MODELS``): card.json plus weights, used in place.
* any **model folder** (card.json plus weights) given by path.

Cards of published models ship inside the package (``SynthBrainLib/cards``); their weights must be
imported or downloaded into the cache.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import CardError, CheckpointError, ModelNotFoundError, OutputError, Remedy, SynthBrainError
from ..outputs.atomic_files import replaced_atomically
from ..outputs.digests import file_digests
from .cards import ModelCard, WeightFile, builtin_cards, check_network_arguments, load_card
from .download import download_file

CARD_FILE = "card.json"
INSTALL_FILE = "install.json"
#: The package the demo models are installed as (``Resources/Models`` in the repository).
DEMO_MODELS_PACKAGE = "synthbrain_demo_models"


def default_home() -> Path:
    env = os.environ.get("SYNTHBRAIN_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "synthbrain"


def demo_models_dir() -> Path | None:
    """Where the installed ``synthbrain_demo_models`` package is (a wheel, an sdist or an editable
    install), found with importlib.resources; None when it is not installed."""
    from importlib.resources import files

    try:
        folder = files(DEMO_MODELS_PACKAGE)
    except ModuleNotFoundError:
        return None
    return Path(str(folder)) if Path(str(folder)).is_dir() else None


def shipped_dirs() -> list[Path]:
    """``SYNTHBRAIN_SHIPPED_MODELS`` (``os.pathsep``-separated folders), then the demo models package."""
    dirs = [Path(p).expanduser() for p in os.environ.get("SYNTHBRAIN_SHIPPED_MODELS", "").split(os.pathsep) if p]
    demo = demo_models_dir()
    return dirs + ([demo] if demo is not None else [])


@dataclass
class WeightRecord:
    """One weight file of an installed model.

    ``checksum`` is ``verified`` (matched the card's published sha256/md5), ``unpublished`` (the
    card knows no checksum; sha256 recorded at install), or ``mismatch-accepted`` (the user imported
    different weights on purpose with ``allow_unverified``).
    """

    key: str
    path: Path
    sha256: str
    size: int
    checksum: str
    source: str = ""


@dataclass
class InstalledModel:
    """A card and the local weight files it needs."""

    card: ModelCard
    folder: Path
    location: str  # "cache" | "shipped" | "folder"
    weights: dict[str, WeightRecord] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return [k for k in self.card.weights if k not in self.weights]

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def size_bytes(self) -> int:
        return sum(w.size for w in self.weights.values())

    def provenance(self) -> dict[str, Any]:
        return {
            k: {"file": w.path.name, "sha256": w.sha256, "checksum": w.checksum, "location": self.location}
            for k, w in self.weights.items()
        }


def _iterable(value: Any) -> list:
    try:
        return list(value)
    except TypeError:
        return [object()]  # not iterable: fails the path check


def card_digest(card: ModelCard) -> str:
    """sha256 of what a card says about its weights: its id, each weight file with its published
    checksums, and the networks they load into. An installed model records the digest of the card
    its weights were verified against and is refused with a card that says otherwise; wording,
    versions and other fields may change freely."""
    import hashlib

    data = card.to_dict()
    bound = {
        "id": data.get("id"),
        "weights": {
            k: {f: w.get(f) for f in ("file", "sha256", "md5")} for k, w in sorted(data.get("weights", {}).items())
        },
        "networks": data.get("networks"),
    }
    return hashlib.sha256(json.dumps(bound, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _atomic_write_text(path: Path, text: str) -> None:
    with replaced_atomically(path, suffix=".tmp") as tmp:
        tmp.write_text(text, encoding="utf-8")


_DIGEST_CACHE: dict[tuple[str, int, int, int, tuple[str, ...]], dict[str, str]] = {}


def cached_digests(path: Path, algorithms: tuple[str, ...]) -> dict[str, str]:
    """:func:`file_digests`, remembered per (path, size, mtime) for this process: shipped models are
    checked on every lookup, and re-hashing unchanged files each time would make the Slicer panel slow."""
    stat = path.stat()
    key = (
        str(path.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
        stat.st_ctime_ns,
        algorithms,
    )  # ctime: a restored mtime does not hide an edit
    if key not in _DIGEST_CACHE:
        _DIGEST_CACHE[key] = file_digests(path, algorithms)
    return _DIGEST_CACHE[key]


def checksum_status(weight: WeightFile, digests: dict[str, str]) -> str | None:
    """``verified`` / ``unpublished`` / ``None`` (mismatch) for a file's digests."""
    if not weight.has_checksum:
        return "unpublished"
    if weight.sha256 and digests.get("sha256") != weight.sha256:
        return None
    if weight.md5 and digests.get("md5") != weight.md5:
        return None
    return "verified"


class ModelStore:
    """Find, import, download and verify models.

    Args:
        home: cache root (default ``$SYNTHBRAIN_HOME`` or ``~/.cache/synthbrain``); models go in
            ``home/models``.
        shipped: folders with shipped models (default: ``$SYNTHBRAIN_SHIPPED_MODELS`` and the
            repository's ``Resources/Models``).
    """

    def __init__(self, home: str | Path | None = None, shipped: Iterable[str | Path] | None = None) -> None:
        if home is not None and (not isinstance(home, (str, os.PathLike)) or not str(home)):
            raise ModelNotFoundError(f"model store home {home!r} is not a folder path")
        if shipped is not None and (
            isinstance(shipped, (str, bytes)) or not all(isinstance(p, (str, os.PathLike)) for p in _iterable(shipped))
        ):
            raise ModelNotFoundError(f"shipped {shipped!r} is not a list of folder paths")
        self.home = Path(home).expanduser() if home is not None else default_home()
        if self.home.exists() and not self.home.is_dir():
            raise ModelNotFoundError(
                f"model store home {self.home} is a file, not a folder", remedy=Remedy("other_home")
            )
        self.shipped = [Path(p) for p in shipped] if shipped is not None else shipped_dirs()

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    # ---- cards ----------------------------------------------------------------------------
    def _shipped_folders(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for base in self.shipped:
            if base.is_dir():
                for card_path in sorted(base.glob(f"*/{CARD_FILE}")):
                    found.setdefault(card_path.parent.name, card_path.parent)
        return found

    def cards(self) -> dict[str, ModelCard]:
        """Every card known here: built-in (published models), shipped, and imported custom ones."""
        cards = self.reserved_cards()
        if self.models_dir.is_dir():
            for card_path in sorted(self.models_dir.glob(f"*/{CARD_FILE}")):
                if card_path.parent.name not in cards:
                    cards[card_path.parent.name] = load_card(card_path)
        return cards

    def reserved_cards(self) -> dict[str, ModelCard]:
        """Cards whose id nobody else may take: built-in (published models) and shipped ones."""
        cards = dict(builtin_cards())
        for model_id, folder in self._shipped_folders().items():
            cards.setdefault(model_id, load_card(folder / CARD_FILE))
        return cards

    def card(self, model_id: str) -> ModelCard:
        if not isinstance(model_id, str):
            raise ModelNotFoundError(f"model {model_id!r} is not a model id")
        cards = self.cards()
        if model_id not in cards:
            raise ModelNotFoundError(
                f"model {model_id!r} is not known; known models: {', '.join(sorted(cards)) or 'none'}"
            )
        return cards[model_id]

    # ---- locating --------------------------------------------------------------------------
    def locate(self, model: str | Path, *, require_complete: bool = True) -> InstalledModel:
        """Find a model by id (cache, then shipped) or by folder path; check its weight files.

        Raises:
            ModelNotFoundError: unknown id, or weights not installed (the message says how to get them).
            CheckpointError: an installed file changed since it was installed / shipped.
        """
        path = Path(str(model)).expanduser()
        if path.is_dir() and (path / CARD_FILE).is_file():
            installed = self._folder_model(path, "folder")
        else:
            model_id = str(model)
            cache = self.models_dir / model_id
            shipped = self._shipped_folders()
            if (cache / INSTALL_FILE).is_file():
                try:
                    installed = self._cache_model(cache, self.card(model_id))
                except CheckpointError:
                    # A cache entry that fails its checks must not hide a complete, verified
                    # shipped copy of the same model (which is then used); without one, it is the error.
                    installed = self._complete_shipped(model_id, shipped)
                    if installed is None:
                        raise
                if not installed.complete:  # a half-done import must not hide a complete shipped copy
                    installed = self._complete_shipped(model_id, shipped) or installed
            elif model_id in shipped:
                installed = self._folder_model(shipped[model_id], "shipped")
            else:
                card = self.card(model_id)
                installed = InstalledModel(card=card, folder=cache, location="cache")
        if require_complete and not installed.complete:
            raise self._not_installed(installed)
        return installed

    def _not_installed(self, installed: InstalledModel) -> ModelNotFoundError:
        card = installed.card
        missing = ", ".join(card.weights[k].file for k in installed.missing)
        single = installed.missing[0] if len(card.weights) > 1 and len(installed.missing) == 1 else None
        if not card.weights_public:
            return ModelNotFoundError(
                f"weights of {card.id} ({missing}) are not installed and not public; if you have them",
                remedy=Remedy("install_weights", model=card.id, component=single, detail="import"),
            )
        how = "download" if any(card.weights[k].url for k in installed.missing) else "import"
        bundle = (
            f" (they come in the MONAI bundle {card.source.get('bundle')})"
            if card.source.get("type") == "monai-bundle"
            else ""
        )
        return ModelNotFoundError(
            f"weights of {card.id} ({missing}) are not installed{bundle}",
            remedy=Remedy("install_weights", model=card.id, component=single if how == "import" else None, detail=how),
        )

    def _folder_model(self, folder: Path, location: str) -> InstalledModel:
        """A card.json + weights folder, used in place; every present file is hashed and checked."""
        card = load_card(folder / CARD_FILE)
        installed = InstalledModel(card=card, folder=folder, location=location)
        for key, weight in card.weights.items():
            path = folder / weight.file
            if not path.is_file():
                continue
            digests = cached_digests(path, ("sha256", "md5") if weight.md5 else ("sha256",))
            status = checksum_status(weight, digests)
            if status is None:
                raise CheckpointError(
                    f"{path}: checksum does not match card {card.id} (sha256 {digests['sha256']}); the file "
                    "is corrupt or was replaced"
                )
            installed.weights[key] = WeightRecord(
                key, path, digests["sha256"], path.stat().st_size, status, source=location
            )
        return installed

    def _cache_model(self, folder: Path, card: ModelCard) -> InstalledModel:
        """A cached model: every file is hashed (once per process) and compared with install.json.

        Size and modification time alone are not trusted: a file edited in place with its time
        restored would otherwise load as "verified" (2 GB hash in about a second here).
        """
        installed = InstalledModel(card=card, folder=folder, location="cache")
        bound = self._install_card_digest(folder)
        if bound is not None and bound != card_digest(card):
            raise CheckpointError(
                f"the weights in {folder} were verified against another card than {card.id}'s "
                "(the card changed, or the folder was not made by this store)",
                remedy=self._reinstall(card),
            )
        for key, entry in self._install_record(folder).items():
            if key not in card.weights:
                continue
            path = folder / entry["file"]
            if not path.is_file():
                continue
            weight = card.weights[key]
            digests = cached_digests(path, ("sha256", "md5") if weight.md5 else ("sha256",))
            digest = digests["sha256"]
            if digest != entry["sha256"]:
                raise CheckpointError(
                    f"{path} changed since it was installed (sha256 {digest}, installed {entry['sha256']})",
                    remedy=self._reinstall(card),
                )
            if entry["checksum"] != "mismatch-accepted" and checksum_status(weight, digests) is None:
                # install.json says these are the card's weights, but they are not (a hand-made or
                # foreign cache entry): never run them under this id
                raise CheckpointError(
                    f"{path} is not the published {card.id} '{key}' checkpoint although {INSTALL_FILE} says "
                    f"{entry['checksum']!r}",
                    remedy=self._reinstall(card),
                )
            installed.weights[key] = WeightRecord(
                key, path, entry["sha256"], entry["size"], entry["checksum"], entry.get("source", "")
            )
        return installed

    @staticmethod
    def _install_record(folder: Path) -> dict[str, dict]:
        """The ``weights`` entries of a cached model's install.json (a clear error if it is damaged)."""
        path = folder / INSTALL_FILE
        try:
            weights = json.loads(path.read_text(encoding="utf-8")).get("weights", {})
            if not isinstance(weights, dict) or not all(
                isinstance(e, dict) and {"file", "sha256", "size", "checksum"} <= e.keys() for e in weights.values()
            ):
                raise ValueError("unexpected content")
        except (ValueError, AttributeError, RecursionError, OSError) as exc:
            raise CheckpointError(
                f"{path} is damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); delete "
                f"{folder} and install the model again"
            ) from None
        return weights

    @staticmethod
    def _install_card_digest(folder: Path) -> str | None:
        """The card digest install.json binds the weights to (None: installed before binding existed)."""
        try:
            record = json.loads((folder / INSTALL_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        digest = record.get("card_sha256") if isinstance(record, dict) else None
        return digest if isinstance(digest, str) else None

    @staticmethod
    def _reinstall(card: ModelCard) -> Remedy:
        how = "download" if card.weights_public and any(w.url for w in card.weights.values()) else "import"
        return Remedy("reinstall_weights", model=card.id, detail=how)

    # ---- listing and verifying -------------------------------------------------------------
    def list(self) -> list[tuple[str, InstalledModel | None, str]]:
        """Every known model: (id, what is installed or None, problem or "").

        A model whose files changed since install is listed with the problem instead of failing
        the whole listing.
        """
        rows = []
        for model_id in sorted(self.cards()):
            try:
                rows.append((model_id, self.locate(model_id, require_complete=False), ""))
            except CheckpointError as exc:
                rows.append((model_id, None, str(exc)))
        return rows

    def verify(self, model: str | None = None) -> list[tuple[str, str, str]]:
        """Re-hash installed and shipped weight files.

        Returns:
            (model, file, status) rows; status starts with ``ok`` or says what is wrong (missing,
            changed since install, not the published weights).
        """
        rows = []
        for model_id in [model] if model else sorted(self.cards()):
            card = self.card(model_id)
            files = self._installed_files(model_id, card)
            if not files and model:
                rows.append((model_id, "-", "not installed"))
            for weight, path, recorded in files:
                if not path.is_file():
                    rows.append((model_id, path.name, "missing"))
                    continue
                digests = file_digests(path, ("sha256", "md5") if weight.md5 else ("sha256",))
                if recorded is not None and digests["sha256"] != recorded["sha256"]:
                    rows.append(
                        (
                            model_id,
                            path.name,
                            f"changed since install (sha256 {digests['sha256']}, installed "
                            f"{recorded['sha256']}); install it again",
                        )
                    )
                    continue
                status = checksum_status(weight, digests)
                accepted = recorded is not None and recorded.get("checksum") == "mismatch-accepted"
                if status is None and not accepted:
                    rows.append((model_id, path.name, "does not match the card's published checksum"))
                else:
                    rows.append((model_id, path.name, f"ok ({recorded['checksum'] if recorded else status})"))
        return rows

    def _installed_files(self, model_id: str, card: ModelCard) -> list[tuple[WeightFile, Path, dict | None]]:
        """(weight, file, install record or None) for whatever is installed or shipped."""
        install = self.models_dir / model_id / INSTALL_FILE
        if install.is_file():
            entries = self._install_record(install.parent)
            return [(card.weights[k], install.parent / e["file"], e) for k, e in entries.items() if k in card.weights]
        folder = self._shipped_folders().get(model_id)
        if folder is None:
            return []
        return [(w, folder / w.file, None) for w in card.weights.values() if (folder / w.file).is_file()]

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
                ``card.json``, or a checkpoint file (``.pt``/``.pth``/``.ckpt``/``.safetensors``).
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
                f"{path} is neither a MONAI bundle folder, a model folder with {CARD_FILE}, nor a checkpoint file"
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

    def _complete_shipped(self, model_id: str, shipped: dict[str, Path] | None = None) -> InstalledModel | None:
        """The shipped copy of ``model_id`` when it has all its (verified) weights, else None."""
        folder = (self._shipped_folders() if shipped is None else shipped).get(model_id)
        if folder is None:
            return None
        model = self._folder_model(folder, "shipped")
        return model if model.complete else None

    def _kind_of_reserved(self, model_id: str) -> str:
        return "built-in" if model_id in builtin_cards() else "shipped"

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
    def download(self, model: str, *, progress: Callable[[str, int, int | None], None] | None = None) -> InstalledModel:
        """Download the card's weight files that are not installed yet (resuming partial ones)."""

        card = self.card(model)
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


__all__ = ["ModelStore", "InstalledModel", "WeightRecord", "default_home", "SynthBrainError"]
