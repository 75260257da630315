"""cxrdoll: explanations of chest X-ray classifiers turned into segmentation pre-training labels (DoLL)."""

from cxrdoll.constants import COMPETITION_OBSERVATIONS, OBSERVATIONS

__version__ = "0.1.0"
__all__ = ["OBSERVATIONS", "COMPETITION_OBSERVATIONS", "__version__"]
