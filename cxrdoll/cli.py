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
    "synth": "cxrdoll.data.synth.command",
    "prepare-chexpert": "cxrdoll.data.chexpert_command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cxrdoll", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # User errors: one clear line, no traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
