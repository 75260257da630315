"""Every command's ``--help``: each option says what it is for."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cxrdoll.cli import COMMANDS, build_parser


def _command_parsers(name: str) -> list[tuple[str, argparse.ArgumentParser]]:
    parser = build_parser(name)
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    command = sub.choices[name]
    nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
    if nested:  # experiment <name>
        return [(f"{name} {inner}", p) for inner, p in nested[0].choices.items()]
    return [(name, command)]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_has_help(name):
    """An option listed bare ('--seed SEED', nothing after it) leaves its meaning, unit and default to guessing."""
    bare = [(cmd, action.option_strings[0])
            for cmd, parser in _command_parsers(name)
            for action in parser._actions
            if action.option_strings and not action.help]
    assert not bare, bare


def _has_default(action: argparse.Action) -> bool:
    """A default worth stating: by identity, since ``0 in (None, False)`` is true and would pass over every
    option whose default is 0 (seeds, --size 0, --num-workers 0)."""
    default = action.default
    return not (default is None or default is False or default is argparse.SUPPRESS or default == [])


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_with_a_default_states_it(name):
    unstated = [(cmd, action.option_strings[0])
                for cmd, parser in _command_parsers(name)
                for action in parser._actions
                if action.option_strings and _has_default(action) and "default" not in (action.help or "")]
    assert not unstated, unstated


def test_a_default_of_zero_is_one_to_state():
    parser = argparse.ArgumentParser()
    seed, flag = parser.add_argument("--seed", type=int, default=0), parser.add_argument("--x", action="store_true")
    assert _has_default(seed) and _has_default(parser.add_argument("--f", default=0.0))
    assert not _has_default(flag) and not _has_default(parser.add_argument("--n")) and not _has_default(parser._actions[0])


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_does_not_import_torch(name):
    """label-quality and seg-datalist --help took 6-8 s importing torch and MONAI for the modules their run uses."""
    import subprocess
    import sys

    code = ("import sys\nfrom cxrdoll.cli import main\ntry:\n    main([%r, '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({'torch', 'monai'} & set(sys.modules)))" % name)
    root = Path(__file__).resolve().parents[1]  # this checkout's cxrdoll, also without PYTHONPATH
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.splitlines()[-1] == "[]"
