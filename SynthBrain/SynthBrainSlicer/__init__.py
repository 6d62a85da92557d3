"""The SynthBrain Slicer module's parts (``SynthBrain.py`` only declares the module and picks them).

* :mod:`.application`: the panel widget and the module logic - the one module that imports Qt.
* :mod:`.parameters`: the parameter node, one ``parameterPack`` per panel section.
* :mod:`.panel`: the panel's rules (sliders from cards, requests, model selectors, messages).
* :mod:`.runs`: one background run at a time for the panel (buttons, progress, status).
* :mod:`.logic`: :class:`~.logic.SynthBrainLogic`, the console-scriptable logic (models, pipelines,
  checks, background runs, console calls).
* :mod:`.settings`: :class:`~.settings.RunSettings`, how a run is made, passed whole to task builders.
* :mod:`.brain_tasks`, :mod:`.image_tasks`: the task builders (conditioned models; work on the user's nodes).
* :mod:`.painting`: segmentations to paint on, in a model's label schema.
* :mod:`.tasks`: a synthesis split into a thread-safe ``compute`` and a main-thread ``apply``.
* :mod:`.scene`: MRML conversions (results to volume, segmentation and sequence nodes, and back).
* :mod:`.saving`: provenance sidecars written whenever Slicer saves a result.
* :mod:`.views`: comparisons side by side, sweep browsers, the Segment Editor's nodes (MRML only).
* :mod:`.choices`: the panel's enums and model kinds.
* :mod:`.dependencies`: installing torch (PyTorch extension) and the rest (pip, constrained).
* :mod:`.compatibility`: which Slicer releases SynthBrain runs on (checked first).
* :mod:`.environment`: where SynthBrainLib and the demo models are.
* :mod:`.selftest`: the self-test in the Slicer application.
* :mod:`.i18n`: Slicer's translation function ``_``.

They live in this sub-package, not beside ``SynthBrain.py``, because Slicer loads every ``*.py``
file at the top of a module folder as a module of its own.
"""
