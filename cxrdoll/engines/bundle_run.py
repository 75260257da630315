"""Run the classifier bundle in-process, as ``python -m monai.bundle run`` would; refuse misspelt overrides."""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

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
    from monai.bundle import ConfigWorkflow

    root = Path(bundle_root)
    files = [str(root / "configs" / name) for name in configs]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: bundle config(s) not found: {', '.join(missing)}")
    refuse_unknown_ids(files, overrides)
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


def refuse_unknown_ids(config_files: str | Sequence[str], ids: Iterable[str]) -> None:
    """Refuse override ids the configs do not define: MONAI would add a misspelt one
    (``lerning_rate``) as a new, unused entry and the run would use the default.

    A new key is accepted under a component (a dict with ``_target_``: a keyword its class takes,
    such as ``train#dataloader#prefetch_factor``) or under an empty dict of options; the class
    then refuses a wrong one. Metadata ids (``_meta_#...``) are MONAI's own.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files)

    def defined(key: str) -> bool:
        if key in parser or key.startswith("_meta_"):
            return True
        parent = key.rpartition("#")[0]
        content = parser[parent] if parent and parent in parser else None
        return isinstance(content, dict) and ("_target_" in content or not content)

    unknown = sorted(k for k in ids if not defined(k))
    if unknown:
        files = config_files if isinstance(config_files, str) else ", ".join(config_files)
        raise KeyError(f"bundle override(s) {unknown} not defined in {files}: check the spelling "
                       "(nested ids are written train#trainer#amp)")


# ``monai.bundle.scripts.run``'s and its workflow's own arguments: every other ``--name value`` is a
# config override
RUN_ARGUMENTS = frozenset({"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking",
                           "args_file", "workflow_type", "workflow_name", "properties_path"})


def command_line_overrides(argv: Sequence[str]) -> tuple[Any, list[str]] | None:
    """Config files and override ids of a ``python -m monai.bundle run`` command line (as python-fire
    reads it: ``--id value``, ``--id=value``, a bare ``--flag``, ``-`` read as ``_``), with those of
    an ``--args_file``; None for any other command line."""
    script = Path(argv[0]) if argv else Path()
    if script.parts[-3:] != ("monai", "bundle", "__main__.py") or len(argv) < 2 or argv[1] != "run":
        return None
    given: dict[str, str | None] = {}
    tokens = list(argv[2:])
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--"):
            continue  # a positional run_id
        name, sep, value = token[2:].partition("=")
        if not sep:
            value = tokens.pop(0) if tokens and not tokens[0].startswith("--") else None
        given[name.replace("-", "_")] = value  # as fire reads it: --learning-rate is learning_rate
    if given.get("args_file"):
        from monai.bundle import ConfigParser

        given = {**ConfigParser.load_config_file(given["args_file"]), **given}  # the command line wins
    files = given.get("config_file")
    if not files:
        return None
    if isinstance(files, str) and files.lstrip().startswith(("[", "(")):
        files = list(ast.literal_eval(files))
    return files, [k for k in given if k not in RUN_ARGUMENTS]


def refuse_misspelt_overrides(argv: Sequence[str] | None = None) -> None:
    """In every bundle's ``initialize``: a ``python -m monai.bundle run`` override that names no id of
    its configs is an error, as it is for :func:`make_workflow`. In-process runs pass here untouched."""
    found = command_line_overrides(sys.argv if argv is None else argv)
    if found is not None:
        refuse_unknown_ids(*found)


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
