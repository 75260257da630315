"""cxr_doll_labeller bundle: metadata, config merge, and real runs on a tiny local set-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser, verify_metadata

from cxrdoll.engines.bundle_run import run_bundle
from cxrdoll.labels.writer import read_label
from tests.labels.tiny_setup import CARDIO, tiny_setup

PROJECT = Path(__file__).resolve().parents[2]
BUNDLE = PROJECT / "bundles" / "cxr_doll_labeller"
CONFIGS = BUNDLE / "configs"
SCHEMA = PROJECT / "cxrdoll" / "resources" / "meta_schema.json"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("labeller"), n=3, size=40)


def test_layout_and_metadata_verify_offline():
    for rel in ("configs/metadata.json", "configs/inference.json", "configs/multi_gpu_inference.json",
                "configs/logging.conf", "docs/README.md", "LICENSE", "large_files.yml"):
        assert (BUNDLE / rel).is_file(), rel
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))


def test_multi_gpu_config_shards_by_rank():
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "multi_gpu_inference.json")])
    assert parser["labeller#rank"] == "@rank" and parser["rank"] == "$dist.get_rank()"
    assert parser["world_size"] == "$dist.get_world_size()"
    assert "$cxrdoll.distributed.init_process_group(@dist_backend)" in parser["initialize"]
    assert parser["run"] == ["$@labeller.run()"]


def test_tensorboard_folder_follows_a_rank_given_by_hand(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["output_dir"] = "/labels"
    assert parser.get_parsed_content("tensorboard_dir") == "/labels/tensorboard/rank0"
    parser["rank"] = 3
    assert parser.get_parsed_content("tensorboard_dir", lazy=False) == "/labels/tensorboard/rank3"


def test_bundle_run_command_writes_labels(tiny, tmp_path):
    classifiers, datalist = tiny
    out = tmp_path / "doll"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "inference.json"),
           "--bundle_root", str(BUNDLE), "--classifiers", str(classifiers), "--datalist", str(datalist),
           "--output_dir", str(out), "--explainer", "doll_ig", "--image_size", "32", "--num_workers", "0",
           "--ig_options#steps", "4", "--num_overlays", "1"]
    result = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "img/s" in result.stderr  # the progress bar reports throughput
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["explainer"] == "doll_ig" and manifest["explainer_options"]["steps"] == 4
    assert manifest["counts"]["labelled"] == 3 and manifest["image_size"] == 32
    datalist_out = json.loads((out / "datalist.json").read_text())
    label = read_label(datalist_out["training"][0]["label"])
    assert label["mask"].shape == (14, 32, 32) and label["state"][CARDIO] == 1
    assert len(list((out / "overlays").glob("*.png"))) == 1
    assert list((out / "tensorboard" / "rank0").glob("events.out.tfevents.*"))


@pytest.mark.parametrize(("explainer", "size"), [("gradcampp", None), ("occlusion", 32)])
def test_other_explainers_share_the_output_format(tiny, tmp_path, explainer, size):
    """Without ``image_size`` the labeller works at the size classifiers.json says they were trained at (40)."""
    classifiers, datalist = tiny
    run_bundle(BUNDLE, ("inference.json",), classifiers=str(classifiers), datalist=str(datalist),
               output_dir=str(tmp_path), explainer=explainer, num_workers=0, num_overlays=0, progress=False,
               **({} if size is None else {"image_size": size}))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["explainer"] == explainer and len(manifest["models"]) == 1  # the best single classifier
    assert manifest["image_size"] == (size or 40)
    assert manifest["models"][0]["name"] == "densenet_tiny_0"
    label = read_label(tmp_path / "tiny/patient00000/study1/view1_frontal.npz")
    assert set(label) == {"mask", "state", "soft"} and label["soft"].dtype == np.float16
    assert label["state"][CARDIO] == 1 and not label["mask"][label["state"] != 1].any()
    assert (label["mask"].astype(bool) <= (label["soft"] > 0)).all()  # foreground only where there is evidence


def test_unknown_explainer_lists_the_known_ones(tiny, tmp_path):
    classifiers, datalist = tiny
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the labeller's own error
        run_bundle(BUNDLE, ("inference.json",), classifiers=str(classifiers), datalist=str(datalist),
                   output_dir=str(tmp_path), explainer="foo", num_workers=0, progress=False)
    assert "unknown explainer 'foo'; expected one of [" in str(err.value.__cause__)


@pytest.mark.slow
def test_torchrun_two_ranks_shard_the_images(tiny, tmp_path):
    classifiers, datalist = tiny
    out = tmp_path / "dist"
    configs = f"['{CONFIGS / 'inference.json'}','{CONFIGS / 'multi_gpu_inference.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", str(BUNDLE),
           "--classifiers", str(classifiers), "--datalist", str(datalist), "--output_dir", str(out),
           "--image_size", "32", "--num_workers", "0", "--ig_options#steps", "4", "--num_overlays", "0"]
    result = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (out / ".shards").glob("rank*.json")) == ["rank0000-of-0002.json",
                                                                           "rank0001-of-0002.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["counts"]["labelled"] == 3
