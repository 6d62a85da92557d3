"""Developer tools: benchmarks, the sampler quality study, the evaluation of models against
phantoms, the phantom population and the demo models' training.

They are for people who develop SynthBrain or train and evaluate models (the ``synthbrain bench``,
``train`` and ``evaluate`` commands); the library itself never imports them, and the Slicer
extension does not ship them (SynthBrain/CMakeLists.txt). Some need extras: ``pip install
synthbrain[phantoms]`` (nilearn, scipy), matplotlib for montages.
"""
