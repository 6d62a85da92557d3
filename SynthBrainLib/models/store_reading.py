"""Reading the model store: which models there are, where their weights are, and whether those
weights are still what was installed (locate, list, verify). Nothing here writes; importing and
downloading are :mod:`.store_writing`, and :class:`~.store.ModelStore` is both.

Three places hold models:

* the **cache** (``$SYNTHBRAIN_HOME/models/<id>/``, default ``~/.cache/synthbrain``): models
  imported from a MONAI bundle, a checkpoint or a model folder, or downloaded. Each folder has the
  weight files and ``install.json`` (what each file is, its sha256 and whether it matched a
  published checksum).
* **shipped** models (``Resources/Models/<id>/`` beside the package, or the folders in
  ``$SYNTHBRAIN_SHIPPED_MODELS``): card.json plus weights, used in place.
* any **model folder** (card.json plus weights) given by path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import CheckpointError, ModelNotFoundError, Remedy
from ..outputs.digests import file_digests
from .cards import ModelCard, WeightFile, builtin_cards, load_card

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


class StoreReader:
    """Find models and check their weight files; the reading half of :class:`~.store.ModelStore`.

    Args:
        home: cache root (default ``$SYNTHBRAIN_HOME`` or ``~/.cache/synthbrain``); models go in
            ``home/models``.
        shipped: folders with shipped models (default: ``$SYNTHBRAIN_SHIPPED_MODELS`` and the
            installed demo models).
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

    def _complete_shipped(self, model_id: str, shipped: dict[str, Path] | None = None) -> InstalledModel | None:
        """The shipped copy of ``model_id`` when it has all its (verified) weights, else None."""
        folder = (self._shipped_folders() if shipped is None else shipped).get(model_id)
        if folder is None:
            return None
        model = self._folder_model(folder, "shipped")
        return model if model.complete else None

    def _kind_of_reserved(self, model_id: str) -> str:
        return "built-in" if model_id in builtin_cards() else "shipped"
