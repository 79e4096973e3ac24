"""The layer rule of ``src/cacheclient`` as data, and a checker over the import graph.

A module imports only from its own layer or below (README, "Architecture"). Every import counts,
including those inside functions (lazy imports are still dependencies). The package's own
``__init__`` is the public facade on top of everything: nothing inside imports it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

LAYERS: dict[str, int] = {
    "cacheclient._version": 0,
    "cacheclient.errors": 0,
    "cacheclient.model": 0,
    "cacheclient.events": 0,
    "cacheclient.metadata": 1,
    "cacheclient.resolution": 1,
    "cacheclient.transport": 2,
    "cacheclient.store": 2,
    "cacheclient.trust": 2,
    "cacheclient.mirrors": 3,
    "cacheclient.fetch": 3,
    "cacheclient.installation": 4,
    "cacheclient.ci": 5,
    "cacheclient.pipeline": 5,
    "cacheclient.settings": 6,
    "cacheclient.api": 6,
    "cacheclient.cli": 6,
    "cacheclient.__main__": 6,
    "cacheclient": 7,
}
"""Layer of each top-level part; a module belongs to the longest matching prefix."""

ONLY_FROM: dict[str, int] = {"cacheclient.installation": 1}
"""Parts held to a stricter rule: installation uses value objects and pure readers only."""


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.why}"


def layer_of(module: str) -> tuple[str, int]:
    """The part (longest matching prefix in :data:`LAYERS`) and its layer."""
    best = max(
        (p for p in LAYERS if module == p or module.startswith(p + ".")),
        key=len,
        default=None,
    )
    if best is None:
        raise KeyError(f"{module}: no layer assigned (add it to tests/layers.py)")
    return best, LAYERS[best]


def module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """Every ``cacheclient`` module that *source* imports, with its line number."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("cacheclient")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            if base.startswith("cacheclient"):
                found.append((node.lineno, base))
    return found


def check_module(module: str, source: str, *, is_package: bool = False) -> list[Violation]:
    part, layer = layer_of(module)
    if module == "cacheclient":
        return []  # the facade re-exports lazily from every layer
    out: list[Violation] = []
    for line, imported in imports_of(source, module, is_package=is_package):
        other, other_layer = layer_of(imported)
        if other == part:
            continue
        if other_layer > layer:
            out.append(Violation(module, line, imported, f"layer {other_layer} above {layer}"))
        elif part in ONLY_FROM and other_layer > ONLY_FROM[part]:
            limit = ONLY_FROM[part]
            out.append(Violation(module, line, imported, f"{part} may use layers 0-{limit} only"))
    return out


def check_tree(src: Path) -> list[Violation]:
    out: list[Violation] = []
    for path in sorted((src / "cacheclient").rglob("*.py")):
        module = module_name(path, src)
        out += check_module(
            module, path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py"
        )
    return out
