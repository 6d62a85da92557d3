"""SynthBrain's developer tools (the synthbrain-dev distribution, apart from the user's package):
benchmarks, the sampler quality study, batch throughput, the evaluation of models against phantoms
and of lesion insertion, the MNI152 phantom population and the demo models' training.

They are for people who develop SynthBrain or train and evaluate models: the ``synthbrain-dev``
command (``train``, ``evaluate``, ``bench``) and ``python -m synthbrain_dev.<tool>``. They import
SynthBrainLib; SynthBrainLib never imports them, the ``synthbrain`` wheel does not hold them and the
Slicer extension does not ship them. ``pip install ./devtools`` (from a checkout) installs them with
nilearn and scipy; matplotlib for the phantom montage.
"""
