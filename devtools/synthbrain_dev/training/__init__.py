"""Training the shipped demo models on the MNI152 phantom population (``synthbrain-dev train``)."""

from .demo_models import DEMO_IDS, train_demo, write_model_folder

__all__ = ["DEMO_IDS", "train_demo", "write_model_folder"]
