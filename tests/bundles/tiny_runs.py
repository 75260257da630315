"""Settings for a few-second CPU run of each training bundle on tiny generated data."""

from __future__ import annotations

from pathlib import Path

from tests.bundles.classifier_data import write_tiny_datalist
from tests.bundles.seg_data import write_tiny_doll, write_tiny_downstream

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TRAINING_BUNDLES = ("cxr_classifier", "cxr_seg_pretrain", "cxr_seg_adapter")
SEG_NETWORK = {"encoder_name": "densenet_tiny", "decoder_channels": [32, 16, 16, 8, 8], "image_size": 32}


def tiny_run_settings(bundle: str, root: Path, batch_size: int = 2) -> dict:
    """``make_workflow`` settings for ``bundle`` (one of ``TRAINING_BUNDLES``): 16 training images."""
    common = {"bundle_root": BUNDLES / bundle, "batch_size": batch_size, "num_workers": 0}
    if bundle == "cxr_classifier":
        datalist = write_tiny_datalist(root / "data", n_train=16, n_val=4)
        return {**common, "datalist": str(datalist), "network_name": "densenet_tiny", "image_size": 64, "resume": False}
    if bundle == "cxr_seg_pretrain":
        datalist = write_tiny_doll(root / "doll", n_train=16, n_val=2)
        return {**common, **SEG_NETWORK, "datalist": str(datalist), "device": "cpu", "resume": False}
    if bundle == "cxr_seg_adapter":
        datalist = write_tiny_downstream(root / "down", n_train=16, n_val=2)
        return {**common, **SEG_NETWORK, "datalist": str(datalist), "mode": "scratch", "device": "cpu"}
    raise ValueError(f"not a training bundle: {bundle!r}")
