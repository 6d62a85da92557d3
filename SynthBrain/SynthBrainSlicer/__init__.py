"""Qt-free parts of the SynthBrain Slicer module.

* :mod:`.environment`: where SynthBrainLib and the demo models are; installing dependencies.
* :mod:`.scene`: MRML conversions (results to volume, segmentation and sequence nodes, and back).
* :mod:`.tasks`: a synthesis split into a thread-safe ``compute`` and a main-thread ``apply``.
* :mod:`.logic`: :class:`~.logic.SynthBrainLogic`, the console-scriptable logic.

They live in this sub-package, not beside ``SynthBrain.py``, because Slicer loads every ``*.py``
file at the top of a module folder as a module of its own.
"""
