"""The IG benchmark on a tiny network: parity with captum, and scores against a converged reference."""

from __future__ import annotations

import json

import pytest

from benchmarks.ig_throughput import main


def test_converged_reference_scores_captum_and_every_run_and_quadrature(tmp_path):
    out = tmp_path / "ig.json"
    main(["--device", "cpu", "--network", "densenet_tiny", "--size", "32", "--images", "2", "--images-per-batch", "2",
          "--warmup", "0", "--steps", "4", "--converged-steps", "128", "--sweep", "--sweep-steps", "4",
          "--sweep-images", "2", "--sweep-backward", "loop", "--sweep-method", "gausslegendre", "riemann_middle",
          "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["parity_rel_l2_at_captum_steps"] < 1e-4
    conv = result["converged_reference"]
    assert conv["steps"] == 128 and 0 < conv["captum_rel_l2"] < 1
    four, fifty, midpoint = result["runs"]  # the sweep's Gauss-Legendre point repeats the first run: skipped
    # fast IG at captum's 50 nodes is captum, so it stands exactly where captum does against the reference
    assert fifty["steps"] == 50 and fifty["converged_rel_l2"] == pytest.approx(conv["captum_rel_l2"], rel=1e-3)
    assert four["steps"] == 4 and four["converged_rel_l2"] > fifty["converged_rel_l2"]
    assert (midpoint["method"], midpoint["steps"]) == ("riemann_middle", 4)
    assert midpoint["converged_rel_l2"] != four["converged_rel_l2"]
    table = out.with_suffix(".md").read_text()
    assert "fast IG fp32 riemann_middle, 2 images x 4 steps" in table and "vs IG at 128 nodes" in table and f"{conv['captum_top10_iou']:.4f}" in table
