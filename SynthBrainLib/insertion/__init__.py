"""Lesion insertion into a real scan: register the model's template to the scan, build the
patient's tissue map, and blend a synthesised lesion into the scan leaving every other voxel as it
was. The pipeline method is :meth:`SynthBrainLib.pipelines.LabelToImagePipeline.insert`; these
modules are its parts (numpy, SimpleITK; no model, no torch)."""
