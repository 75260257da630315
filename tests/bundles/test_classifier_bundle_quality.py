"""Small version of the quality target: the bundle learns the planted findings of synthetic phantoms.

The full target (>= 2000 images at 128 px, DenseNet121, mean AUROC >= 0.9 in 10 min) is
``benchmarks/classifier_quality.py``; here a tiny DenseNet on 64 px phantoms must clearly beat
chance on the validation split within six epochs.
"""

from __future__ import annotations

import pytest

from cxrdoll.constants import LOCALISABLE_OBSERVATIONS
from cxrdoll.engines.auroc import mean_of_defined
from cxrdoll.engines.bundle_run import train_classifier


@pytest.mark.slow
def test_bundle_learns_planted_findings(tmp_path, one_thread):
    from cxrdoll.cli import main

    synth = tmp_path / "synth"
    assert main(["synth", "--out", str(synth), "--n", "500", "--size", "64", "--valid-frac", "0.3",
                 "--lateral-frac", "0", "--n-organs", "0", "--n-lesions", "0"]) == 0
    datalist = synth / "datalists" / "chexpert.json"
    if not datalist.is_file():
        assert main(["prepare-chexpert", "--root", str(synth), "--csv", "CheXpert-v1.0-small/train.csv",
                     "--valid-csv", "CheXpert-v1.0-small/valid.csv", "--out", str(datalist)]) == 0
    metrics = train_classifier(tmp_path / "out", datalist=str(datalist), network_name="densenet_tiny", image_size=64,
                               batch_size=32, num_workers=0, max_epochs=6, learning_rate=0.003)
    best = metrics["best"]
    planted = mean_of_defined(best["auroc"], LOCALISABLE_OBSERVATIONS)
    # Chance is 0.5; at epoch 4 runs here reached 0.72-0.75 (competition five) and 0.71-0.72
    # (13 planted), and keep climbing: these bounds fail on a broken loss, mask, metric or data chain.
    assert best["mean_auroc"] >= 0.68, best
    assert planted >= 0.65, best
