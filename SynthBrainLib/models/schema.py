"""The words of the model-card schema that code acts on: the model kinds and the label names of
lesions and tissue. Every module that needs one of them imports it from here.

Plain Python (no numpy, no torch): the command line's parser and the Slicer module read these
before anything heavy is imported.
"""

from __future__ import annotations

#: ``card.kind`` of a conditional latent diffusion model that makes a brain image from conditions
#: (Brain LDM): :class:`~SynthBrainLib.pipelines.ConditionalBrainPipeline`, ``synthbrain generate``.
BRAIN_KIND = "conditional_latent_diffusion"
#: ``card.kind`` of a label generator (brainSPADE3D labels): :class:`~SynthBrainLib.pipelines.LabelGeneratorPipeline`,
#: ``synthbrain labels``.
LABELS_KIND = "label_generator"
#: ``card.kind`` of a label-to-image model (brainSPADE3D image):
#: :class:`~SynthBrainLib.pipelines.LabelToImagePipeline`, ``synthbrain image-from-labels`` and ``insert-lesions``.
IMAGE_KIND = "label_to_image"

#: ``card.kind`` of a model that makes an MR image of a chosen modality on a requested grid (size and
#: spacing), e.g. NV-Generate-MR-Brain: :class:`~SynthBrainLib.pipelines.ModalityImagePipeline`,
#: ``synthbrain generate --modality``.
MODALITY_KIND = "modality_image"

#: Label names that are lesions, in the label schema's order (brainSPADE3D values 6, 7, 8, 9).
LESION_NAMES = ("wmh", "tumour", "edema", "gdtumour")
#: Label names of the tissue a whole brain is rendered from.
TISSUE_NAMES = ("csf", "gm", "wm")
