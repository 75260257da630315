"""``python -m cxrdoll experiment <name> ...``: one CLI command grouping the experiments."""

from __future__ import annotations

import argparse
import importlib

from cxrdoll.cli import tidy_help

# experiment name -> module defining HELP, add_arguments(parser) and run(args) -> int
EXPERIMENTS: dict[str, str] = {
    "sample-efficiency": "cxrdoll.experiments.sample_efficiency",
}

HELP = "run an experiment: " + ", ".join(EXPERIMENTS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="experiment", metavar="<experiment>", required=True)
    for name, module_name in EXPERIMENTS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=tidy_help(module.HELP), description=tidy_help(module.HELP) + ".")
        module.add_arguments(cmd)
        cmd.set_defaults(_experiment_run=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args._experiment_run(args) or 0)
