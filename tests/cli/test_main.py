"""The command line starts fast: only the command being run is imported."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from cacheclient.cli.main import COMMANDS, build_parser, main

_PROBE = """
import sys
from cacheclient.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
loaded = sorted(m for m in sys.modules if m.startswith("cacheclient.cli.") or m == "requests")
print(" ".join(loaded))
"""


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action


def test_the_help_lines_here_are_the_commands_own() -> None:
    action = _subparsers(build_parser())
    registered = {a.dest: a.help for a in action._choices_actions}
    assert registered == COMMANDS


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_version_and_help_import_no_command(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=True
    ).stdout
    loaded = out.splitlines()[-1].split()
    assert "cacheclient.cli.main" in loaded
    assert not [m for m in loaded if m.endswith("_cmd") or m == "requests"]


def test_a_command_imports_only_itself() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "host", "--json"], capture_output=True, text=True, check=True
    ).stdout
    loaded = out.splitlines()[-1].split()
    assert "cacheclient.cli.host_cmd" in loaded
    assert not [m for m in loaded if m.endswith("_cmd") and m != "cacheclient.cli.host_cmd"]
    assert "requests" not in loaded


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name, summary in COMMANDS.items():
        assert name in out
        assert summary[:40] in out.replace("\n", " ").replace("  ", " ")


def test_a_command_help_is_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--debug", "resolve", "--help"])
    assert "--mirror" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bogus"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
