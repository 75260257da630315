"""``python -m cxrdoll <command>``: one entry point for every stage.

Each command lives in its own module, which defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Only the chosen command's module is imported; the command list reads each
``HELP`` from source, so ``--help`` stays fast and one stage's import cannot break another's.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import importlib.util
import sys
import textwrap
from pathlib import Path

from cxrdoll.errors import one_line, show_traceback, user_error

# command name -> module implementing it
COMMANDS: dict[str, str] = {
    "sweep-classifiers": "cxrdoll.engines.sweep",
    "synth": "cxrdoll.data.synth.command",
    "prepare-chexpert": "cxrdoll.data.chexpert_command",
    "prepare-mimic": "cxrdoll.data.mimic_command",
    "prepare-nih": "cxrdoll.data.nih_command",
    "prepare-shared-cls": "cxrdoll.data.shared_sets_command",
    "prepare-chexlocalize": "cxrdoll.labels.chexlocalize_command",
    "prepare-nih-boxes": "cxrdoll.labels.nih_boxes_command",
    "label-quality": "cxrdoll.labels.quality_command",
    "ingest-dicom": "cxrdoll.dicom.ingest_command",
    "seg-datalist": "cxrdoll.data.seg_datalist_command",
    "experiment": "cxrdoll.experiments.command",
    "demo": "cxrdoll.pipeline.command",
}

DESCRIPTION = (
    "cxrdoll turns explanations of chest X-ray classifiers into segmentation pre-training labels (DoLL).\n"
    "Each stage of the pipeline is one command."
)
EPILOG = "Run 'python -m cxrdoll <command> --help' for a command's options and examples."


def command_help(module_name: str) -> str:
    """A command's one-line ``HELP``, read from its source without importing the module."""
    spec = importlib.util.find_spec(module_name)
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        for node in ast.parse(Path(spec.origin).read_text()).body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "HELP" for t in node.targets)
                and isinstance(node.value, ast.Constant)
            ):
                return tidy_help(node.value.value)
    return tidy_help(importlib.import_module(module_name).HELP)


def _command_list(width: int = 79) -> str:
    """``commands:`` and one wrapped line-group per command, help aligned after the longest name."""
    column = max(map(len, COMMANDS)) + 4
    lines = ["commands:"]
    for name, module_name in COMMANDS.items():
        wrapped = textwrap.wrap(command_help(module_name), width - column) or [""]
        lines.append(f"  {name:<{column - 2}}{wrapped[0]}")
        lines += [" " * column + more for more in wrapped[1:]]
    return "\n".join(lines)


def tidy_help(text: str) -> str:
    """Help lines in one style: capitalised, no final full stop."""
    text = " ".join(text.split()).rstrip(".")
    return text[:1].upper() + text[1:]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; only the ``only`` command's module is imported and given its arguments."""
    from cxrdoll import __version__

    parser = argparse.ArgumentParser(
        prog="python -m cxrdoll",
        usage="%(prog)s [-h] [--version] <command> [options]",
        description=DESCRIPTION + "\n\n" + _command_list() if only is None else DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cxrdoll {__version__}")
    # The command list lives in the description: argparse would wrap long command names badly.
    sub = parser.add_subparsers(dest="command", metavar="<command>", help=argparse.SUPPRESS, required=True)
    for name, module_name in COMMANDS.items():
        if name != only:
            sub.add_parser(name)
            continue
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, prog=f"python -m cxrdoll {name}", description=tidy_help(module.HELP) + ".")
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        build_parser().print_help(sys.stderr)
        return 2
    if not argv[0].startswith("-") and argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        print(f"error: unknown command {argv[0]!r}; {hint}run 'python -m cxrdoll --help' for the list", file=sys.stderr)
        return 2
    only = argv[0] if argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)  # --help, --version, usage errors: argparse exits (0 or 2)
    try:
        return int(args._run(args) or 0)
    except Exception as err:  # user errors (cxrdoll.errors): one line on stderr, exit code 2; bugs keep their traceback
        cause = None if show_traceback() else user_error(err)
        if cause is None:
            raise
        print(f"error: {one_line(cause)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
