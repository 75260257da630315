"""``python -m cxrdoll <command>``: one entry point for every stage.

Each command lives in its own module, which defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported lazily so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module implementing it
COMMANDS: dict[str, str] = {
    "sweep-classifiers": "cxrdoll.engines.sweep",
    "synth": "cxrdoll.data.synth.command",
    "prepare-chexpert": "cxrdoll.data.chexpert_command",
    "prepare-shared-cls": "cxrdoll.data.shared_sets_command",
    "label-quality": "cxrdoll.labels.quality_command",
    "ingest-dicom": "cxrdoll.dicom.ingest_command",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with ``only``, just that command's module is imported (fast, and isolated)."""
    parser = argparse.ArgumentParser(prog="python -m cxrdoll", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # User errors: one clear line, no traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
