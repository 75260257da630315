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

from cxrdoll.data.shared_sets import LUNG_SET, SOURCES
from cxrdoll.pipeline.stages import Stage

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUNDLES = PROJECT_ROOT / "bundles"


def _interpreter() -> str:
    """This environment's ``python``, however the demo was started (``python3`` too): stage markers
    compare command lines, so one spelling must not re-run every stage of the other's."""
    plain = Path(sys.prefix) / "bin" / "python"
    return str(plain) if plain.exists() and plain.resolve() == Path(sys.executable).resolve() else sys.executable


PY = _interpreter()


@dataclass(frozen=True)
class Profile:
    """Sizes of one run; the defaults are the 2-core CPU demo (about 6 minutes). Bundles pick the
    GPU themselves when there is one."""

    n_images: int = 1200
    synth_size: int = 128
    n_organs: int = 120
    n_lesions: int = 40
    image_size: int = 64
    archs: tuple[str, ...] = ("densenet_tiny", "resnet10", "efficientnet-b0")
    classifier_epochs: int = 3
    classifier_lr: float = 1e-3  # from scratch: no pretrained weights are downloaded
    batch_size: int = 32
    num_workers: int = 0
    label_items: int | None = 60  # per split, for the label-quality comparison; None labels every image
    doll_label_items: int | None = 400  # per split for DoLL, whose labels are the pre-training set
    ig_steps: int = 8
    tau: float = 0.75
    seg_encoder: str = "resnet10"  # the best CPU classifier; its encoder outweighs the decoder, so adapters save parameters
    seg_epochs: int = 8
    n_labelled: tuple[int, ...] = (8, 32)
    seeds: int = 3
    experiment_profile: str = "demo"


PROFILES: dict[str, Profile] = {
    "cpu": Profile(),
    "cuda": Profile(
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
        label_items=None,
        doll_label_items=None,
        seg_encoder="densenet121",
        seg_epochs=30,
        n_labelled=(4, 8, 16, 32, 64),
        experiment_profile="full",
    ),
    # A minute-long end-to-end check of the wiring (tests); its numbers mean nothing.
    "smoke": Profile(
        n_images=120, synth_size=64, n_organs=16, n_lesions=4, image_size=64, archs=("densenet_tiny", "resnet10"),
        classifier_epochs=1, batch_size=16, ig_steps=4, tau=0.0, label_items=8, doll_label_items=8, seg_encoder="densenet_tiny", seg_epochs=1,
        n_labelled=(4,), seeds=1,
    ),
}


@dataclass(frozen=True)
class Inputs:
    """Where the data come from: the embedded synthetic default, or the user's own."""

    chexpert_root: Path | None = None
    chexpert_csv: str = "train.csv"
    downstream: Path | None = None  # a MONAI datalist JSON of images + masks
    shared_data: Path | None = None  # ../shared/data: real classification sets + real lung masks


def shared_lungs_datalist(work: Path) -> Path:
    """Where the demo writes the shared real lung masks' datalist when ``--shared-data`` gives no other."""
    return work / "datalists" / "lungs.json"


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


def build_stages(work: Path, p: Profile, inputs: Inputs) -> list[Stage]:
    """The pipeline's stages in order, with every path under ``work``."""
    data = work / "data"
    datalist = work / "datalists" / "chexpert.json"
    stages: list[Stage] = []

    # 1-2. Data: the synthetic default, the shared real sets, or the user's CheXpert copy.
    truth: Path | None = None
    downstream_stage: Stage | None = None
    if inputs.chexpert_root is not None:
        prepare = cxrdoll("prepare-chexpert", "--root", inputs.chexpert_root, "--csv", inputs.chexpert_csv, "--out", datalist)
        prepare_reads = [inputs.chexpert_root / inputs.chexpert_csv]  # its images are the classifier cache's to check
    elif inputs.shared_data is not None:
        stages.append(Stage("data", "map the shared real classification sets onto CheXpert's layout",
                            [cxrdoll("prepare-shared-cls", "--shared", inputs.shared_data, "--out", data)],
                            [data / "CheXpert-shared" / "train.csv"],
                            # what it reads, not the whole folder (a --out inside it would change it every run)
                            reads=[*(inputs.shared_data / source for source in SOURCES),
                                   inputs.shared_data / LUNG_SET / "datalist.json",
                                   inputs.shared_data / LUNG_SET / "datalist.csv"]))
        prepare = cxrdoll("prepare-chexpert", "--root", data, "--csv", "CheXpert-shared/train.csv", "--blank", "ignore",
                          "--out", datalist)  # what a source does not label is unknown, not negative
        prepare_reads = [data / "CheXpert-shared"]
        own = shared_lungs_datalist(work)  # the demo's own downstream datalist: a stage like any other
        if inputs.downstream is not None and (inputs.downstream == own or not inputs.downstream.exists()):
            downstream_stage = Stage("downstream", "the shared real lung masks as the downstream datalist",
                                     [cxrdoll("seg-datalist", "--layout", "shared-lungs", "--src",
                                              inputs.shared_data / LUNG_SET,
                                              "--out", inputs.downstream)],
                                     [inputs.downstream], reads=[inputs.shared_data / LUNG_SET])
    else:
        truth = data / "truth"
        stages.append(Stage("data", "generate the synthetic phantoms (CheXpert layout, true masks, organ and lesion sets)",
                            [cxrdoll("synth", "--out", data, "--n", p.n_images, "--size", p.synth_size, "--seed", 0,
                                     "--n-organs", p.n_organs, "--n-lesions", p.n_lesions, "--workers", 2, "--preview",
                                     "--overwrite")],
                            [data / "CheXpert-v1.0-small" / "train.csv", truth]))
        prepare = cxrdoll("prepare-chexpert", "--root", data, "--csv", "CheXpert-v1.0-small/train.csv",
                          "--valid-csv", "CheXpert-v1.0-small/valid.csv", "--out", datalist)
        prepare_reads = [data / "CheXpert-v1.0-small"]
    stages.append(Stage("datalist", "build the classification datalist (frontal views, uncertainty policy)",
                        [prepare], [datalist], reads=prepare_reads))

    # 3. Classifiers: one bundle run per architecture, then the registry the labeller reads.
    classifiers = work / "classifiers"
    train_runs = [
        bundle_run("cxr_classifier", "train.json", datalist=datalist, output_dir=classifiers / arch, network_name=arch,
                   image_size=p.image_size, max_epochs=p.classifier_epochs, batch_size=p.batch_size,
                   num_workers=p.num_workers, learning_rate=p.classifier_lr)
        for arch in p.archs
    ]
    register = cxrdoll("sweep-classifiers", "--register-only", "--datalist", datalist, "--out", classifiers,
                       "--image-size", p.image_size, "--archs", *p.archs)
    stages.append(Stage("classifiers", f"train {len(p.archs)} classifiers ({', '.join(p.archs)})",
                        [*train_runs, register], [classifiers / "classifiers.json"], classifiers, reads=[datalist]))

    # 4. Labels: the DoLL ensemble and the single-model / CAM baselines, through the same labeller.
    labels = work / "labels"
    label_runs = [
        bundle_run("cxr_doll_labeller", "inference.json", classifiers=classifiers / "classifiers.json",
                   datalist=datalist, output_dir=labels / name, explainer=name, image_size=p.image_size,
                   tau=p.tau, max_items_per_section=p.doll_label_items if name == "doll_ig" else p.label_items,
                   num_workers=p.num_workers,
                   **{"ig_options#steps": p.ig_steps})
        for name in LABELLERS
    ]
    manifests = [labels / name / "manifest.json" for name in LABELLERS]  # settings, classifier digests, counts
    stages.append(Stage("labels", "label with DoLL (IG ensemble) and the baselines (single IG, Grad-CAM, Grad-CAM++)",
                        label_runs, manifests, labels, reads=[classifiers / "classifiers.json", datalist]))
    if truth is not None:
        stages.append(Stage("label-quality", "score every labelling against the true masks",
                            [cxrdoll("label-quality", "--truth", truth, "--out", work / "label_quality", "--labels",
                                     *(f"{name}={labels / name}" for name in LABELLERS))],
                            [work / "label_quality" / "label_quality.md"], reads=[*manifests, truth]))

    # 5. Pre-training on the DoLL labels, the encoder initialised from the matching classifier.
    pretrain = work / "pretrain"
    stages.append(Stage("pretrain", "pre-train the whole segmentation network on the DoLL labels",
                        [bundle_run("cxr_seg_pretrain", "train.json", datalist=labels / "doll_ig" / "datalist.json",
                                    output_dir=pretrain, encoder_name=p.seg_encoder,
                                    init_ckpt=classifiers / p.seg_encoder / "model.pt", image_size=p.image_size,
                                    max_epochs=p.seg_epochs, batch_size=p.batch_size, num_workers=p.num_workers)],
                        [pretrain / "model.pt"], pretrain,
                        reads=[labels / "doll_ig" / "manifest.json", labels / "doll_ig" / "datalist.json",
                               classifiers / p.seg_encoder / "model.pt"]))

    # 6-7. Fine-tune on scarce downstream masks from four starting points, evaluated on held-out masks.
    if downstream_stage is not None:
        stages.append(downstream_stage)
    downstream = inputs.downstream or (data / "organs" / "datalist.json")
    experiment = work / "sample_efficiency"
    stages.append(Stage("finetune", "fine-tune with adapters against scratch / backbone-only / full fine-tune, "
                        "and evaluate Dice on the held-out split",
                        [cxrdoll("experiment", "sample-efficiency", "--datalist", downstream, "--out", experiment,
                                 "--pretrained-ckpt", pretrain / "model.pt",
                                 "--classifier-ckpt", classifiers / p.seg_encoder / "model.pt",
                                 "--encoder-name", p.seg_encoder, "--profile", p.experiment_profile,
                                 "--sizes", ",".join(map(str, p.n_labelled)),
                                 "--seeds", ",".join(map(str, range(p.seeds))))],
                        [experiment / "results.md"], experiment,
                        reads=[downstream, pretrain / "model.pt", classifiers / p.seg_encoder / "model.pt"]))
    return stages


# labeller name in the report -> explainer id of cxr_doll_labeller
LABELLERS: tuple[str, ...] = ("doll_ig", "ig", "gradcam", "gradcampp")
