"""Network zoo: classifiers and segmenters that share one encoder registry (see docs/FORMATS.md)."""

from cxrdoll.networks.adapters import (
    MODES,
    Adapter,
    add_adapters,
    configure_trainable,
    count_trainable_parameters,
    has_adapters,
    replace_head,
)
from cxrdoll.networks.checkpoints import (
    LoadReport,
    init_encoder_from_classifier,
    load_checkpoint_file,
    load_network_weights,
    load_segmenter_checkpoint,
    load_state_dict_file,
)
from cxrdoll.networks.classifier import (
    CLASSIFIER_NAMES,
    PAPER_CLASSIFIER_NAMES,
    Classifier,
    ClassifierHead,
    build_classifier,
)
from cxrdoll.networks.downstream import build_downstream_segmenter, prepare_downstream_segmenter
from cxrdoll.networks.encoders import ENCODERS, STRIDES, FeatureEncoder, build_encoder, checked_image_size
from cxrdoll.networks.segmenter import DECODERS, SIZE_DIVISOR, Segmenter, build_segmenter

__all__ = [
    "CLASSIFIER_NAMES",
    "DECODERS",
    "ENCODERS",
    "MODES",
    "PAPER_CLASSIFIER_NAMES",
    "SIZE_DIVISOR",
    "STRIDES",
    "Adapter",
    "Classifier",
    "ClassifierHead",
    "FeatureEncoder",
    "LoadReport",
    "Segmenter",
    "add_adapters",
    "build_classifier",
    "build_downstream_segmenter",
    "build_encoder",
    "build_segmenter",
    "checked_image_size",
    "configure_trainable",
    "count_trainable_parameters",
    "has_adapters",
    "init_encoder_from_classifier",
    "load_checkpoint_file",
    "load_network_weights",
    "load_segmenter_checkpoint",
    "load_state_dict_file",
    "prepare_downstream_segmenter",
    "replace_head",
]
