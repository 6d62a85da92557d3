"""Models: what a model is and where its weights come from.

* :mod:`.cards` — model cards (JSON): networks, schedule, conditions, outputs, weights; validated on load
  (no torch at import).
* :mod:`.store` — the model store: built-in and shipped cards, the cache, imports and downloads.
* :mod:`.checkpoints` — reading (``weights_only`` / safetensors) and checking weight files, old-format key mapping.
* :mod:`.networks` — building a card's MONAI networks and loading their weights.
* :mod:`.download` — resumable, checksum-verified downloads.
"""
