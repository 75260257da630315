"""Every command's ``--help``: each option says what it is for."""

from __future__ import annotations

import argparse

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


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_with_a_default_states_it(name):
    unstated = [(cmd, action.option_strings[0])
                for cmd, parser in _command_parsers(name)
                for action in parser._actions
                if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS)
                and "default" not in (action.help or "")]
    assert not unstated, unstated
