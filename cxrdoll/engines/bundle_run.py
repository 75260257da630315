"""Run the classifier bundle in-process, as ``python -m monai.bundle run`` would."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from cxrdoll.io import read_json

# The bundle as laid out in a source checkout (the package sits beside ``bundles/``).
DEFAULT_BUNDLE_ROOT = Path(__file__).resolve().parents[2] / "bundles" / "cxr_classifier"


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``ID=VALUE`` command-line strings as bundle overrides; VALUE is JSON when it parses, else a string."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"bundle override {pair!r}: expected ID=VALUE")
        try:
            result[key] = json.loads(value)
        except json.JSONDecodeError:
            result[key] = value
    return result


def make_workflow(
    bundle_root: str | os.PathLike = DEFAULT_BUNDLE_ROOT,
    configs: Sequence[str] = ("train.json",),
    **overrides: Any,
) -> Any:
    """An initialised ``ConfigWorkflow`` from ``configs`` (merged in order) with ``overrides``.

    Every override must name an id the configs define: MONAI would add a misspelt one
    (``lerning_rate``) as a new, unused entry and train with the default.
    """
    from monai.bundle import ConfigParser, ConfigWorkflow

    root = Path(bundle_root)
    files = [str(root / "configs" / name) for name in configs]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: bundle config(s) not found: {', '.join(missing)}")
    parser = ConfigParser()
    parser.read_config(files)
    unknown = sorted(k for k in overrides if k not in parser)
    if unknown:
        raise KeyError(f"bundle override(s) {unknown} not defined in {', '.join(files)}")
    workflow = ConfigWorkflow(
        config_file=files,
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        workflow_type=None,
        bundle_root=str(root),
        **overrides,
    )
    workflow.initialize()
    return workflow


def run_bundle(
    bundle_root: str | os.PathLike = DEFAULT_BUNDLE_ROOT,
    configs: Sequence[str] = ("train.json",),
    **overrides: Any,
) -> Any:
    """Run a bundle workflow in-process, as ``python -m monai.bundle run`` would.

    Returns the workflow so callers can inspect engines after the run (tests, benchmarks).
    """
    workflow = make_workflow(bundle_root, configs, **overrides)
    workflow.run()
    workflow.finalize()
    return workflow


def train_classifier(output_dir: str | os.PathLike, **overrides: Any) -> dict:
    """Train through the bundle into ``output_dir``; return its ``metrics.json``."""
    run_bundle(output_dir=str(output_dir), **overrides)
    return read_json(Path(output_dir) / "metrics.json")
