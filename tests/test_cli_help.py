"""Every ``segxai`` command (built from COMMANDS, so a new one is covered): ``--help`` works and documents each option."""

from __future__ import annotations

import argparse
import importlib

import pytest

from napari_segxai.cli import COMMANDS, main


def command_parser(module_name: str) -> argparse.ArgumentParser:
    """The parser one module of COMMANDS registers."""
    module = importlib.import_module(f"napari_segxai.cli.{module_name}")
    subparsers = argparse.ArgumentParser(prog="segxai").add_subparsers()
    return module.add_parser(subparsers)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's arguments and options, without --help."""
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("module_name", COMMANDS)
def test_help_exits_0_and_documents_every_option(module_name, capsys):
    parser = command_parser(module_name)
    name = parser.prog.split()[-1]
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: segxai {name}")
    for action in options(parser):
        label = action.option_strings[0] if action.option_strings else action.dest
        assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), f"{name} {label} has no help"
        shown = action.option_strings[-1] if action.option_strings else (action.metavar or action.dest)
        assert shown in text, f"{name} --help does not show {shown}"


@pytest.mark.parametrize("module_name", COMMANDS)
def test_a_command_that_loads_a_model_card_takes_trust_model(module_name):
    flags = {flag for action in options(command_parser(module_name)) for flag in action.option_strings}
    if "--model" in flags:
        assert "--trust-model" in flags  # the untrusted-weights error tells the user to pass it


def test_every_command_of_commands_is_registered():
    parser = argparse.ArgumentParser(prog="segxai")
    subparsers = parser.add_subparsers()
    names = [importlib.import_module(f"napari_segxai.cli.{m}").add_parser(subparsers).prog.split()[-1] for m in COMMANDS]
    from napari_segxai.cli import build_parser

    (registered,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(registered.choices) == names
