"""The whole DoLL pipeline as one resumable run: data → classifiers → DoLL labels → pre-training →
adapter fine-tuning against baselines → evaluation → ``report.md``.

Each stage is a ``python -m cxrdoll …`` or ``python -m monai.bundle run …`` command, printed
before it runs so users can copy it. Profiles hold the sizes: ``cpu`` fits a 2-core machine in
minutes; ``cuda`` uses full-size settings.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from cxrdoll.pipeline.stages import Stage

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUNDLES = PROJECT_ROOT / "bundles"
PY = sys.executable


@dataclass(frozen=True)
class Profile:
    """Sizes of one run; the defaults are the 2-core CPU demo."""

    device: str = "cpu"
    n_images: int = 2000
    synth_size: int = 128
    n_organs: int = 160
    n_lesions: int = 160
    image_size: int = 96
    archs: tuple[str, ...] = ("resnet18", "densenet121", "efficientnet-b0")
    classifier_epochs: int = 4
    batch_size: int = 32
    num_workers: int = 0
    label_split: str = "validation"
    ig_steps: int = 16
    tau: float = 0.8
    seg_encoder: str = "resnet18"
    seg_epochs: int = 6
    n_labelled: tuple[int, ...] = (4, 8, 16, 32)
    seeds: int = 3
    adapter_epochs: int = 20


PROFILES: dict[str, Profile] = {
    "cpu": Profile(),
    "cuda": Profile(
        device="cuda",
        n_images=20000,
        synth_size=320,
        n_organs=400,
        n_lesions=400,
        image_size=320,
        archs=("densenet121", "resnet50", "efficientnet-b2", "seresnext50"),
        classifier_epochs=10,
        batch_size=64,
        num_workers=8,
        ig_steps=20,
        seg_encoder="densenet121",
        seg_epochs=30,
        n_labelled=(4, 8, 16, 32, 64),
        adapter_epochs=60,
    ),
}


@dataclass(frozen=True)
class Inputs:
    """Where the data come from: the embedded synthetic default, or the user's own."""

    chexpert_root: Path | None = None
    chexpert_csv: str = "train.csv"
    downstream: Path | None = None  # a MONAI datalist JSON of images + masks
    shared_data: Path | None = None  # ../shared/data: real classification sets + real lung masks


def profile_with(name: str, **changes) -> Profile:
    return replace(PROFILES[name], **changes)


def bundle_run(bundle: str, config: str | list[str], **overrides) -> list[str]:
    """A ``python -m monai.bundle run`` command line for one of the project's bundles."""
    configs = [config] if isinstance(config, str) else config
    files = [str(BUNDLES / bundle / "configs" / c) for c in configs]
    command = [PY, "-m", "monai.bundle", "run", "--config_file", files[0] if len(files) == 1 else str(files),
               "--bundle_root", str(BUNDLES / bundle)]
    for key, value in overrides.items():
        command += [f"--{key}", str(value)]
    return command


def cxrdoll(*args: object) -> list[str]:
    return [PY, "-m", "cxrdoll", *map(str, args)]
