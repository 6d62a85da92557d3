"""The demo models shipped with SynthBrain, as an importable package (``synthbrain_demo_models``).

Each folder holds a model card (``card.json``) and its sha256-checked weights. In a wheel or sdist
install this folder is the package ``synthbrain_demo_models`` (``pyproject.toml`` maps it), so
``SynthBrainLib.models.store`` finds the models with ``importlib.resources`` wherever the package is
installed; the Slicer extension copies the same folder beside its module (``SynthBrain/CMakeLists.txt``).
"""
