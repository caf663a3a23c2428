"""The command line's contract: help with examples, exit codes, one-line errors."""

import pytest

from tests.clitools import run_inprocess, run_subprocess

import click

from effnet.cli.main import cli


def all_commands(group=cli, prefix=()):
    """Every command path of the CLI, sub-commands of groups included."""
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from all_commands(command, path)


def test_the_commands_the_issues_ask_for_exist():
    top = {path[0] for path in all_commands()}
    assert {"train", "eval", "predict", "benchmark", "export", "plugins", "config", "data", "import-weights"} <= top


@pytest.mark.parametrize("path", list(all_commands()), ids=" ".join)
def test_every_command_has_help_with_an_example(capsys, path):
    result = run_inprocess(capsys, *path, "--help")
    assert result.code == 0
    assert "Example" in result.out and f"effnet {' '.join(path)}" in result.out


def test_usage_error_is_one_line_exit_2(capsys):
    result = run_inprocess(capsys, "config", "--no-such-option")
    assert result.code == 2
    assert result.err == "error: No such option '--no-such-option'; see `effnet config --help`\n"
    result = run_inprocess(capsys, "trian")
    assert result.code == 2
    assert result.err.startswith("error: No such command 'trian'")


def test_real_process_exit_codes():
    ok = run_subprocess("--version")
    assert ok.code == 0 and "effnet, version" in ok.out
    bad = run_subprocess("config", "--gin", "definitely_missing")
    assert bad.code == 2 and bad.err.count("\n") == 1 and "Traceback" not in bad.err


def test_debug_flag_shows_traceback_for_user_errors(capsys):
    result = run_inprocess(capsys, "--debug", "config", "--gin", "definitely_missing")
    assert result.code == 2
    assert "Traceback (most recent call last)" in result.err
    assert result.err.rstrip().splitlines()[-1].startswith("error: gin file 'definitely_missing' not found")
