"""``cacheclient completion SHELL``: a tab-completion script for bash, zsh or fish.

bash and zsh scripts come from shtab (static scripts: nothing runs at each Tab press); fish's is
written here from the same argparse tree (:mod:`cacheclient.cli.fish`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run"]


def __dir__() -> list[str]:
    return __all__


SHELLS = ("bash", "zsh", "fish")

_INSTALL = {
    "bash": "cacheclient completion bash > ~/.local/share/bash-completion/completions/cacheclient",
    "zsh": 'eval "$(cacheclient completion zsh)" in ~/.zshrc, after compinit',
    "fish": "cacheclient completion fish > ~/.config/fish/completions/cacheclient.fish",
}


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, fish)",
        description="Print a tab-completion script for SHELL on stdout. Install it with: "
        + "; ".join(f"{shell}: {how}" for shell, how in _INSTALL.items()),
    )
    parser.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    parser.set_defaults(func=run)


def script(shell: str) -> str:
    """The completion script of ``cacheclient`` for *shell*."""
    from cacheclient.cli.main import build_parser  # noqa: PLC0415 - the whole command tree

    parser = build_parser()
    if shell == "fish":
        from cacheclient.cli.fish import fish_script  # noqa: PLC0415

        return fish_script(parser)
    import shtab  # noqa: PLC0415 - only for this command

    text: str = shtab.complete(parser, shell=shell)
    return text


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.shell))
    return 0
