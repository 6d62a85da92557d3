"""Models: what a model is, what a request to it may ask, and where its weights come from.

* :mod:`.cards` — model cards (JSON): networks, schedule, conditions, outputs, weights; validated on load
  (no torch at import). Their parts are :mod:`.card_parts`, the readers of their sections
  :mod:`.card_sections` (with :mod:`.card_fields`), the MONAI signature check :mod:`.network_arguments`.
* :mod:`.schema` — the schema's words code acts on: model kinds, lesion and tissue label names.
* :mod:`.requests` — the one check of a request against its card (kind, conditions, sampler, steps,
  guidance, seed, sequence, lesion names); :mod:`.conditioning` maps condition units.
* :mod:`.samplers`, :mod:`.presets`, :mod:`.device_names` — samplers, presets, option names (plain Python).
* :mod:`.store` — the model store: reading (:mod:`.store_reading`: built-in and shipped cards, the cache,
  locate, list, verify) and writing (:mod:`.store_writing`: imports, installs, downloads).
* :mod:`.checkpoints` — reading (``weights_only`` / safetensors) and checking weight files, old-format key mapping.
* :mod:`.networks` — building a card's MONAI networks and loading their weights.
* :mod:`.download` — resumable, checksum-verified downloads.
"""
