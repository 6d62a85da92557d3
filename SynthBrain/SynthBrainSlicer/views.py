"""Showing results in Slicer's views through MRML only (no Qt), so pytest runs it on slicer-core:
the side-by-side comparison, the age sweep's browser and proxy, and the Segment Editor's nodes."""

from __future__ import annotations

import slicer

from . import scene as mrml

#: Singleton tag of the Segment Editor node the panel's embedded editor uses.
EDITOR_TAG = "SynthBrain"
#: Slice views of the side-by-side layout (A left, B right).
SIDE_BY_SIDE_VIEWS = ("Red", "Yellow")
#: Diverging colour table of Slicer's Colors module, for the difference volume.
DIFFERENCE_COLORS = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"


def segment_editor_node(scene):
    """The panel's own Segment Editor node (created once per scene): its editor keeps its effect
    settings apart from the Segment Editor module's."""
    node = scene.GetSingletonNode(EDITOR_TAG, "vtkMRMLSegmentEditorNode")
    if node is None:
        node = slicer.vtkMRMLSegmentEditorNode()
        node.SetSingletonTag(EDITOR_TAG)
        node = scene.AddNode(node)
    return node


def hide_editor_selectors(editor) -> None:
    """The panel chooses the segmentation and the volume painted on; the editor's own selectors
    would offer a second, conflicting choice. (Method names changed over Slicer versions.)"""
    for names in (
        ("setSegmentationNodeSelectorVisible",),
        ("setSourceVolumeNodeSelectorVisible", "setMasterVolumeNodeSelectorVisible"),
    ):
        method = next((getattr(editor, n) for n in names if hasattr(editor, n)), None)
        if method is not None:
            method(False)


def sync_segment_editor(editor, segmentation, reference) -> None:
    """Point the embedded Segment Editor at the panel's segmentation and the volume it paints on."""
    if editor.segmentationNode() is not segmentation:
        editor.setSegmentationNode(segmentation)
    setSource = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode
    getSource = getattr(editor, "sourceVolumeNode", None) or editor.masterVolumeNode
    if getSource() is not reference:
        setSource(reference)


def sweep_browser(scene, sequence):
    """The sequence browser an age sweep's sequence node was created with, or None."""
    return scene.GetNodeByID(sequence.GetAttribute(mrml.BROWSER_ATTRIBUTE) or "")


def sweep_proxy(scene, sequence, sequencesLogic):
    """The volume shown for an age sweep (its browser's proxy node), created if needed."""
    browser = sweep_browser(scene, sequence)
    if browser is None:
        return None
    sequencesLogic.UpdateProxyNodesFromSequences(browser)
    return browser.GetProxyNode(sequence)


def _side_by_side(scene, left, right, foreground=None) -> list:
    """``left`` in the left view and ``right`` in the right, their views linked (the same slice, zoom
    and pan); ``foreground`` over both, or none. Sets the layout node's arrangement to side by side
    when the scene has one (the application also switches the layout manager). Returns the slice
    composite nodes it changed."""
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is not None:
        layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
    changed = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        if composite.GetLayoutName() not in SIDE_BY_SIDE_VIEWS:
            continue
        volume = left if composite.GetLayoutName() == SIDE_BY_SIDE_VIEWS[0] else right
        composite.SetBackgroundVolumeID(volume.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetLinkedControl(True)
        changed.append(composite)
    return changed


def show_side_by_side(scene, volumeA, volumeB, difference) -> list:
    """A in the left view, B in the right, their views linked; the difference B - A is the
    foreground of both (opacity 0: fade it in with the views' slider) in a diverging colour map.
    Returns the slice composite nodes it changed."""
    display = difference.GetDisplayNode()
    if display is not None and scene.GetNodeByID(DIFFERENCE_COLORS) is not None:
        display.SetAndObserveColorNodeID(DIFFERENCE_COLORS)
    changed = _side_by_side(scene, volumeA, volumeB, difference)
    for composite in changed:
        composite.SetForegroundOpacity(0.0)
    return changed


def show_beside(scene, original, result, segmentation=None) -> list:
    """The original scan in the left view and the result in the right, views linked; the
    segmentation (the inserted lesions) is drawn as outlines over both, so the lesion stays visible.
    Returns the slice composite nodes it changed."""
    changed = _side_by_side(scene, original, result)
    if segmentation is not None and segmentation.GetDisplayNode() is not None:
        segmentation.GetDisplayNode().SetVisibility2DFill(False)
    return changed


#: Opacity of the atrophy map over an aged scan: the anatomy stays readable beneath it.
ATROPHY_OPACITY = 0.4


def show_ageing(scene, original, aged, atrophy) -> list:
    """The original scan in the left view and the aged one in the right, views linked; the atrophy map
    (log-Jacobian) over both in a diverging colour map (blue: tissue lost, red: space grown), at
    :data:`ATROPHY_OPACITY`. Returns the slice composite nodes it changed."""
    display = atrophy.GetDisplayNode()
    if display is not None and scene.GetNodeByID(DIFFERENCE_COLORS) is not None:
        display.SetAndObserveColorNodeID(DIFFERENCE_COLORS)
    changed = _side_by_side(scene, original, aged, atrophy)
    for composite in changed:
        composite.SetForegroundOpacity(ATROPHY_OPACITY)
    return changed
