"""Signed metadata is the truth: does the record that selection used agree with the signed spec?

An index, a page or a lock is not signed; the spec a trusted key signed is. Before a selected
build is fetched further, every field that selection looked at must agree with the signed spec,
so an unsigned source can never make a signed build for another target, version or variant
install in its place (:func:`first_disagreement`).
"""

from __future__ import annotations

import dataclasses

from cacheclient.model import BuildRecord, format_variant

__all__ = ["Disagreement", "first_disagreement", "signed_record"]


def __dir__() -> list[str]:
    return __all__


Disagreement = tuple[str, str, str]
"""``(field, unsigned value, signed value)``."""


def first_disagreement(unsigned: BuildRecord, signed: BuildRecord) -> Disagreement | None:
    """The first field on which *unsigned* (what selection used) and *signed* differ.

    Compared: name, version, platform, os, target, every variant the unsigned record states,
    and, when the unsigned source knows the edges, the runtime dependency hashes.

    >>> a = BuildRecord(name="z", version="1", hash="a" * 32, platform="linux", os="d",
    ...                 target="x86_64_v4")
    >>> first_disagreement(a, dataclasses.replace(a, target="x86_64_v2"))
    ('target', 'x86_64_v4', 'x86_64_v2')
    """
    for field in ("name", "version", "platform", "os", "target"):
        mine, theirs = getattr(unsigned, field), getattr(signed, field)
        if mine != theirs:
            return field, str(mine), str(theirs)
    for key, value in sorted(unsigned.variants.items()):
        if key not in signed.variants:
            return f"variants.{key}", format_variant(key, value), "(not set)"
        if signed.variants[key] != value:
            return (
                f"variants.{key}",
                format_variant(key, value),
                format_variant(key, signed.variants[key]),
            )
    if unsigned.dependencies_known:
        mine_deps = {d.hash for d in unsigned.runtime_dependencies()}
        signed_deps = {d.hash for d in signed.runtime_dependencies()}
        if mine_deps != signed_deps:
            return (
                "dependencies",
                ",".join(sorted(h[:7] for h in mine_deps)) or "(none)",
                ",".join(sorted(h[:7] for h in signed_deps)) or "(none)",
            )
    return None


def signed_record(unsigned: BuildRecord, signed: BuildRecord) -> BuildRecord:
    """The record used from here on: the signed one, keeping where the build may be found
    (stacks, manifest path, blobs, source) from the record that selection used."""
    return dataclasses.replace(
        signed,
        stacks=unsigned.stacks or signed.stacks,
        manifest_path=unsigned.manifest_path or signed.manifest_path,
        blobs=unsigned.blobs or signed.blobs,
        source=unsigned.source or signed.source,
        installable=True,
        dependencies_known=True,
    )
