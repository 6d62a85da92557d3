"""SynthBrain: synthesise brain MRI with published generative models, inside 3D Slicer.

The module file only declares the module and picks its parts: the panel and the module logic
(``SynthBrainSlicer/application.py``), the Qt-free rules, tasks and scene work beside it, and the
self-test (``SynthBrainSlicer/selftest.py``). On a Slicer older than 5.10 it loads, says in one line
why SynthBrain cannot run there, and installs nothing (``SynthBrainSlicer/compatibility.py``).
"""

import qt
import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)

from SynthBrainSlicer import compatibility

#: None where SynthBrain runs; else the one line that says why not (Slicer < 5.10, Python < 3.10).
UNSUPPORTED = compatibility.unsupported_reason(slicer_version=compatibility.running_slicer_version(slicer))


class SynthBrain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SynthBrain")
        self.parent.categories = [_("Simulation")]
        self.parent.dependencies = ["Segmentations", "SubjectHierarchy", "Sequences"]
        self.parent.contributors = ["SynthBrain developers"]
        self.parent.helpText = UNSUPPORTED or _(
            "Synthesise brain MRI with published generative models: a T1 brain from age, sex and volumes "
            "(Brain LDM), ageing sweeps and comparisons, and FLAIR/T1/T2 images from label maps with painted "
            "lesions (brainSPADE3D). Results are synthetic and for research only."
        )
        self.parent.acknowledgementText = _(
            "Models: Pinaya et al., DGM4MICCAI 2022; Fernandez et al., DGM4MICCAI 2023. Built on MONAI."
        )


if UNSUPPORTED is None:
    from SynthBrainSlicer import environment, selftest

    environment.ensure_library_on_path()  # the SynthBrainLib shipped with this module, before any other

    from SynthBrainSlicer.application import SynthBrainLogic, SynthBrainWidget  # noqa: E402, F401

    class SynthBrainTest(selftest.SynthBrainSelfTest):
        """The self-test (demo models end to end) under the name Slicer's runner looks for."""

else:

    class SynthBrainWidget(ScriptedLoadableModuleWidget):
        """On an unsupported Slicer: the one line that says why, and nothing else."""

        def setup(self):
            ScriptedLoadableModuleWidget.setup(self)
            label = qt.QLabel(UNSUPPORTED)
            label.wordWrap = True
            self.layout.addWidget(label)

    class SynthBrainLogic(ScriptedLoadableModuleLogic):
        """On an unsupported Slicer there is nothing to script (the module's help says why)."""

    # Not imported at the top: Slicer's runner loads every TestCase class of this module's namespace,
    # and ScriptedLoadableModuleTest has a runTest of its own.
    from slicer import ScriptedLoadableModule as _scripted

    class SynthBrainTest(_scripted.ScriptedLoadableModuleTest):
        def runTest(self):
            self.skipTest(UNSUPPORTED)
