"""The layer rule holds for the whole package, and the checker does catch a wrong arrow."""

from __future__ import annotations

from pathlib import Path

import pytest

from layers import LAYERS, check_module, check_tree, layer_of

SRC = Path(__file__).resolve().parent.parent / "src"


def test_the_package_imports_only_downward() -> None:
    violations = check_tree(SRC)
    assert not violations, "\n".join(map(str, violations))


def test_every_module_has_a_layer() -> None:
    for path in (SRC / "cacheclient").rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        layer_of(".".join(p for p in rel.parts if p != "__init__"))


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("cacheclient.metadata.page", "from cacheclient.store import Store\n"),
        ("cacheclient.model", "import cacheclient.cli.main\n"),
        ("cacheclient.fetch.fetcher", "def f():\n    from cacheclient.pipeline import install\n"),
        ("cacheclient.installation.installer", "from cacheclient.store import Store\n"),
        ("cacheclient.transport.base", "from cacheclient import __version__\n"),
        ("cacheclient.store.core", "from ..settings import load_config\n"),
    ],
)
def test_a_wrong_arrow_is_caught(module: str, source: str) -> None:
    violations = check_module(module, source)
    assert len(violations) == 1
    assert violations[0].line >= 1


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("cacheclient.cli.main", "from cacheclient.pipeline import install\n"),
        ("cacheclient.fetch.fetcher", "from cacheclient.store import Store\n"),
        ("cacheclient.metadata.page", "from .catalog import Catalog\n"),
        ("cacheclient.installation.installer", "from cacheclient.metadata.specfile import x\n"),
    ],
)
def test_a_downward_import_is_fine(module: str, source: str) -> None:
    assert check_module(module, source) == []


def test_the_layers_are_ordered_as_documented() -> None:
    assert LAYERS["cacheclient.errors"] < LAYERS["cacheclient.metadata"]
    assert LAYERS["cacheclient.metadata"] < LAYERS["cacheclient.transport"]
    assert LAYERS["cacheclient.transport"] < LAYERS["cacheclient.fetch"]
    assert LAYERS["cacheclient.fetch"] < LAYERS["cacheclient.installation"]
    assert LAYERS["cacheclient.installation"] < LAYERS["cacheclient.pipeline"]
    assert LAYERS["cacheclient.pipeline"] < LAYERS["cacheclient.cli"]


def test_modules_get_their_logger_from_events() -> None:
    """``cacheclient.events.get_logger`` is what sets up the CLI's routing of log records in a
    process that imported ``logging`` only to log; a logger made elsewhere would bypass it."""
    allowed = {"events.py", "cli/render.py"}  # get_logger itself; the routing it runs
    package = SRC / "cacheclient"
    direct = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if str(path.relative_to(package)) not in allowed
        and "getLogger(" in path.read_text(encoding="utf-8")
    ]
    assert direct == []
