"""Qt-free parts of the SynthBrain Slicer module, tested with pytest outside the Slicer application.

* :mod:`.logic`: :class:`~.logic.SynthBrainLogic`, the console-scriptable logic (tasks, background runs).
* :mod:`.tasks`: a synthesis split into a thread-safe ``compute`` and a main-thread ``apply``.
* :mod:`.scene`: MRML conversions (results to volume, segmentation and sequence nodes, and back).
* :mod:`.saving`: provenance sidecars written whenever Slicer saves a result.
* :mod:`.views`: comparisons side by side, sweep browsers, the Segment Editor's nodes (MRML only).
* :mod:`.panel`: the panel's rules (sliders from cards, requests, model selectors, messages).
* :mod:`.runs`: one background run at a time for the panel (buttons, progress, status).
* :mod:`.choices`: the panel's enums and model kinds.
* :mod:`.dependencies`: installing torch (PyTorch extension) and the rest (pip, constrained).
* :mod:`.environment`: where SynthBrainLib and the demo models are.
* :mod:`.i18n`: Slicer's translation function ``_``.

They live in this sub-package, not beside ``SynthBrain.py``, because Slicer loads every ``*.py``
file at the top of a module folder as a module of its own.
"""
