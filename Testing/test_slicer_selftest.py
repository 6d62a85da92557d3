"""SynthBrain's self-test (SynthBrainSlicer/selftest.py) run the way ctest runs it in Slicer: Slicer's
own ``slicer.testing.runUnitTest`` (5.12.3, from ../shared/slicer-reference) loads ``SynthBrain`` with
unittest's loader, so the ``test_*`` methods run in alphabetical order, each in a fresh instance -
here on a Slicer that has none of SynthBrain's Python packages yet. The self-test's own checks then run
for real on Slicer's MRML libraries with the shipped demo models (the Qt widgets are stand-ins, and
timers fire when the test processes events, as Qt's event loop would).
"""

from __future__ import annotations

import sys
import unittest

import pytest
import slicer_app

pytestmark = [
    pytest.mark.slow,  # the demo models end to end, as in the application (a minute on 2 cores)
    pytest.mark.skipif(not slicer_app.REFERENCE.is_dir(), reason=slicer_app.REFERENCE_MISSING),
]


class FreshSlicerPackages:
    """A Slicer without torch and monai: ``missing()`` lists them until ``install()`` has run once."""

    installed_during: list = []

    def __init__(self, *args, **kwargs) -> None:
        pass

    def missing(self):
        return [] if self.installed_during else ["torch>=2.10", "monai>=1.4,<1.7"]

    def install(self):
        from SynthBrainSlicer.dependencies import InstallOutcome

        self.installed_during.append(SelfTestOrder.current)
        return InstallOutcome(installed=["torch", "monai"])


class SelfTestOrder:
    current = None
    ran: list = []


def test_the_self_test_passes_in_the_order_slicers_runner_uses(monkeypatch, mrml_app, tmp_path):
    import slicer

    monkeypatch.setenv("SYNTHBRAIN_HOME", str(tmp_path / "home"))
    slicer_app.install(monkeypatch, lambda: mrml_app.scene, release="5.12.3")
    module = slicer_app.import_module_file(monkeypatch)
    monkeypatch.setattr(sys.modules["SynthBrainSlicer.logic"], "DependencyInstaller", FreshSlicerPackages)
    FreshSlicerPackages.installed_during, SelfTestOrder.ran = [], []
    selftest = sys.modules["SynthBrainSlicer.selftest"].SynthBrainSelfTest
    original = selftest.setUp

    def recording_setUp(self):
        SelfTestOrder.current = self._testMethodName
        SelfTestOrder.ran.append(self._testMethodName)
        original(self)

    monkeypatch.setattr(selftest, "setUp", recording_setUp)
    panels = []

    def module_widget(name):
        if not panels:
            widget = module.SynthBrainWidget(slicer_app.module_panel_parent())
            widget.setup()
            panels.append(widget)
        return panels[0]

    monkeypatch.setattr(slicer.util, "getModuleLogic", lambda name: module_widget(name).logic, raising=False)
    monkeypatch.setattr(slicer.util, "getModuleWidget", module_widget, raising=False)

    def select_module(name):  # what Slicer does when a module is chosen: the panel is entered
        widget = module_widget(name)
        widget.parent.isEntered = True
        widget.enter()

    monkeypatch.setattr(slicer.util, "selectModule", select_module, raising=False)
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: object(), raising=False)
    monkeypatch.setattr(slicer.util, "delayDisplay", lambda message, *args, **kwargs: None, raising=False)
    testing = slicer_app.load_reference("testing", "5.12.3")
    try:
        testing.runUnitTest([str(slicer_app.MODULE_DIR)], "SynthBrain")  # raises when a test failed
    finally:
        for widget in panels:
            widget.cleanup()
    names = unittest.TestLoader().getTestCaseNames(module.SynthBrainTest)
    assert SelfTestOrder.ran == list(names), f"the runner's order is unittest's alphabetical one: {SelfTestOrder.ran}"
    assert names[0] == "test_AgeSweep", f"a synthesis runs first on a fresh Slicer: {names[0]}"
    assert FreshSlicerPackages.installed_during == [names[0]], (
        f"the first test to run installed the packages, once: {FreshSlicerPackages.installed_during}"
    )
    assert len(names) >= 8, f"every self-test ran: {names}"
