"""Writing cache.spack.io-style package pages for tests, from any mirror's records."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from cacheclient.metadata.page import compute_meta
from cacheclient.model import BuildRecord


def page_entry(record: BuildRecord, stacks: Sequence[str]) -> dict[str, object]:
    """The ``spec_details`` entry cache.spack.io would list for *record* (no dependencies:
    pages never list them)."""
    return {
        "compiler": record.compiler or "none",
        "hash": record.hash,
        "os": record.os,
        "platform": record.platform,
        "size": "-",
        "stacks": list(stacks),
        "target": record.target,
        "variants": record.variant_strings(),
        "versions": [record.version],
    }


def write_page(
    path: Path,
    name: str,
    records: Sequence[BuildRecord],
    *,
    stacks: Callable[[BuildRecord], Sequence[str]] = lambda _r: ["root"],
    edit: Callable[[dict[str, object]], None] | None = None,
) -> Path:
    """Write a page for package *name* listing *records* (one entry each) to *path*.

    *edit* may change each entry after it is made (to forge a page in a test).
    """
    entries = []
    for record in sorted(records, key=lambda r: r.hash):
        entry = page_entry(record, stacks(record))
        if edit is not None:
            edit(entry)
        entries.append(entry)
    meta = compute_meta(entries)
    path.write_text(
        "---\n"
        f'title: "{name}"\n'
        "layout: cache\n"
        "categories: [package, develop]\n"
        f"meta: {json.dumps(meta, sort_keys=True)}\n"
        f"spec_details: {json.dumps(entries, sort_keys=True)}\n"
        "---\n",
        encoding="utf-8",
    )
    return path
