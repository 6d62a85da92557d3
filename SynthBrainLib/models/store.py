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

from .store_reading import (  # noqa: F401 - the store's records and places, imported from here by their users
    CARD_FILE,
    DEMO_MODELS_PACKAGE,
    INSTALL_FILE,
    InstalledModel,
    WeightRecord,
    card_digest,
    default_home,
    demo_models_dir,
    shipped_dirs,
)
from .store_writing import StoreWriter


class ModelStore(StoreWriter):
    """Find, import, download and verify models: reading (:class:`~.store_reading.StoreReader`:
    ``cards``, ``card``, ``locate``, ``list``, ``verify``) and writing
    (:class:`~.store_writing.StoreWriter`: ``import_path``, ``download``) in one object; its
    arguments (``home``, ``shipped``) are :class:`~.store_reading.StoreReader`'s."""


__all__ = ["ModelStore", "InstalledModel", "WeightRecord", "default_home"]
