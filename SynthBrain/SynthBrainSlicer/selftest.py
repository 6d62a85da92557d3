"""SynthBrain's self-test inside the real Slicer application: the shipped demo models end to end.

Installed with the module (so *Reload and Test* works in an installed extension, not only in a
source checkout) and registered with ``slicer_add_python_unittest(SCRIPT SynthBrain.py)``: ctest
runs it through ``slicer.testing.runUnitTest``, which loads the ``test_*`` methods with unittest's
loader - in alphabetical order, each in a fresh instance - so every test stands alone: ``setUp``
installs the Python dependencies on a fresh Slicer before the first test that runs, whichever it is.
These machines cannot run the Slicer application: pytest runs this file through Slicer's own
``runUnitTest`` on Slicer's MRML libraries (Testing/test_slicer_selftest.py).
"""

import logging
import threading
import time

import numpy as np
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

DEMO_BRAIN, DEMO_LABELS, DEMO_IMAGE = "brain-ldm-demo", "labels-demo", "label2image-demo"


class SynthBrainSelfTest(ScriptedLoadableModuleTest):
    """The test methods; the module file's ``SynthBrainTest`` is this class under the name Slicer expects."""

    def setUp(self):
        slicer.mrmlScene.Clear()
        logic = self._logic()
        if logic.missingDependencies():  # a fresh Slicer: the first test to run installs them
            self.delayDisplay("Installing SynthBrain's Python dependencies")
            logic.installDependencies()
        self.assertEqual(logic.missingDependencies(), [], "SynthBrain's Python dependencies are installed")

    def runTest(self):
        """Every test, in the order Slicer's runner uses (unittest's loader: alphabetical)."""
        import unittest

        for name in unittest.TestLoader().getTestCaseNames(type(self)):
            self.setUp()
            getattr(self, name)()

    def _logic(self):
        from SynthBrainSlicer.application import SynthBrainLogic

        logic = SynthBrainLogic()
        logic.device = "cpu"  # the same numbers on every test machine
        return logic

    def _core(self):
        """The module's Qt-free parts the checks read: scene conversions, model kinds, measured volumes."""
        import types

        from SynthBrainSlicer import brain_tasks, choices
        from SynthBrainSlicer import scene as mrml

        return types.SimpleNamespace(
            mrml=mrml,
            BRAIN_KIND=choices.BRAIN_KIND,
            LABELS_KIND=choices.LABELS_KIND,
            IMAGE_KIND=choices.IMAGE_KIND,
            measuredVolumes=brain_tasks.measured_volumes,
        )

    def _nodeIDs(self):
        return sorted(slicer.mrmlScene.GetNthNode(i).GetID() for i in range(slicer.mrmlScene.GetNumberOfNodes()))

    def test_DemoModels(self):
        self.delayDisplay("Demo models")
        logic, core = self._logic(), self._core()
        for modelId, kind in (
            (DEMO_BRAIN, core.BRAIN_KIND),
            (DEMO_LABELS, core.LABELS_KIND),
            (DEMO_IMAGE, core.IMAGE_KIND),
        ):
            status = logic.modelStatus(modelId)
            self.assertTrue(status.installed, status.summary)
            self.assertEqual(status.kind, kind)
        self.assertEqual(type(slicer.util.getModuleLogic("SynthBrain")).__name__, "SynthBrainLogic")

    def test_GenerateBrain(self):
        self.delayDisplay("Conditioned brain")
        logic, core = self._logic(), self._core()
        card = logic.card(DEMO_BRAIN)
        steps = []
        volume = logic.generateBrain(
            model=DEMO_BRAIN, age=72, sex="female", seed=3, measure=True, progress=lambda s, t: steps.append((s, t))
        )
        self.assertEqual(volume.GetAttribute(core.mrml.SYNTHETIC_ATTRIBUTE), "true")
        self.assertEqual(core.mrml.provenance_of(volume)["seed"], 3)
        self.assertTrue(np.allclose(core.mrml.volume_affine(volume), card.output.affine))
        self.assertEqual(volume.GetImageData().GetDimensions(), tuple(card.output.shape))
        self.assertEqual(steps[-1][0], steps[-1][1])
        self.assertEqual(set(core.measuredVolumes(volume)), {"ventricular_volume", "brain_volume"})
        again = logic.generateBrain(model=DEMO_BRAIN, age=72, sex="female", seed=3)
        self.assertNotEqual(again.GetID(), volume.GetID())
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(again), slicer.util.arrayFromVolume(volume)))

    def test_AgeSweep(self):
        self.delayDisplay("Age sweep")
        logic, core = self._logic(), self._core()
        low, high = logic.card(DEMO_BRAIN).conditioning.variable("age").range
        sequence = logic.ageSweep(low, high, 3, model=DEMO_BRAIN, seed=5, preview=True)
        self.assertEqual(sequence.GetNumberOfDataNodes(), 3)
        self.assertEqual(sequence.GetIndexName(), "age")
        browser = slicer.mrmlScene.GetNodeByID(sequence.GetAttribute(core.mrml.BROWSER_ATTRIBUTE))
        self.assertIsNotNone(browser)
        self.assertIsNotNone(browser.GetProxyNode(sequence))

    def test_Compare(self):
        self.delayDisplay("Compare two conditions")
        a, b, difference = self._logic().compareBrains({"age": 50}, {"age": 80}, model=DEMO_BRAIN, seed=3, preview=True)
        arrays = [slicer.util.arrayFromVolume(n).astype(np.float64) for n in (a, b, difference)]
        self.assertTrue(np.allclose(arrays[2], arrays[1] - arrays[0], atol=1e-5))

    def test_BackgroundRun(self):
        self.delayDisplay("Background run from the console")
        run = self._logic().generateBrain(model=DEMO_BRAIN, seed=4, preview=True, background=True)
        end = time.time() + 600
        while not run.finished and time.time() < end:  # the logic's timer adds the node by itself
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertEqual(run.result().GetAttribute("SynthBrain.Synthetic"), "true")

    def test_LesionPaintingOnOtherGeometry(self):
        self.delayDisplay("Lesion painting and synthesis")
        logic, core = self._logic(), self._core()
        template = logic.generateLabels(model=DEMO_LABELS, seed=4)
        # Paint on a grid unlike the model's: 1.5 mm, flipped left-right, offset.
        affine = np.array([[-1.5, 0, 0, 60.0], [0, 1.5, 0, -90.0], [0, 0, 1.5, -50.0], [0, 0, 0, 1]])
        reference = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "paint grid")
        core.mrml.fill_volume(reference, np.zeros((80, 100, 70), np.float32), affine)
        template.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        lesion = np.zeros((70, 100, 80), np.uint8)  # [k, j, i]
        lesion[30:38, 55:63, 35:43] = 1
        tumourId = template.GetSegmentation().GetSegmentIdBySegmentName("tumour")
        slicer.util.updateSegmentBinaryLabelmapFromArray(lesion, template, tumourId, reference)
        image = logic.synthesizeFromSegmentation(template, model=DEMO_IMAGE, sequence="FLAIR", seed=4)
        self.assertTrue(np.allclose(core.mrml.volume_affine(image), affine))
        self.assertEqual(image.GetImageData().GetDimensions(), (80, 100, 70))
        labels, _ = core.mrml.segmentation_to_labels(template, logic.card(DEMO_IMAGE).labels)
        tumourValue = [c.value for c in logic.card(DEMO_IMAGE).labels if c.name == "tumour"][0]
        self.assertTrue(np.all(labels.transpose(2, 1, 0)[lesion > 0] == tumourValue))
        self.assertEqual(core.mrml.provenance_of(image)["sequence"], "FLAIR")

    def test_CancelLeavesSceneUnchanged(self):
        self.delayDisplay("Cancel")
        logic = self._logic()
        before = self._nodeIDs()
        cancel = threading.Event()
        with self.assertRaises(Exception) as raised:
            logic.generateBrain(model=DEMO_BRAIN, seed=1, progress=lambda step, total: cancel.set(), cancel=cancel)
        self.assertEqual(type(raised.exception).__name__, "SynthesisCancelled")
        self.assertEqual(self._nodeIDs(), before)

    def test_PanelRunAndCancel(self):
        self.delayDisplay("Panel: generate, then cancel")
        if slicer.util.mainWindow() is None:
            logging.info("SynthBrain self-test: no main window (--no-main-window), the panel test is skipped")
            return
        from SynthBrainSlicer.choices import Device

        slicer.util.selectModule("SynthBrain")
        widget = slicer.util.getModuleWidget("SynthBrain")
        parameters = widget.logic.getParameterNode()
        parameters.brainModel = DEMO_BRAIN
        parameters.run.device = Device.CPU
        before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        widget.ui.generateButton.click()
        self.assertEqual(widget.ui.generateButton.text, "Cancel")
        self._waitForRun(widget)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), before + 1)
        before = self._nodeIDs()
        widget.ui.generateButton.click()
        widget.ui.generateButton.click()  # now "Cancel"
        self._waitForRun(widget)
        self.assertEqual(self._nodeIDs(), before)

    def _waitForRun(self, widget, timeout=600.0):
        end = time.time() + timeout
        while widget.runs.running and time.time() < end:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertFalse(widget.runs.running, "the run did not finish in time")
