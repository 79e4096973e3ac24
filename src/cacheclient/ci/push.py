"""Publish builds from a store: to an OCI registry or to a directory mirror (``cacheclient push``).

:func:`select_builds` turns what the user named (a lock, specs matched against the store, or the
whole store) into DAG hashes, each with its runtime closure; :func:`push` prepares every build
from the store and hands the lot to the destination's writer: :mod:`cacheclient.mirrors.oci_push`
for ``oci://``/``oci+http://``, :mod:`cacheclient.mirrors.dir_push` for a path or ``file://``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cacheclient.ci.lock import Lock
from cacheclient.errors import NoMatchError, UsageError
from cacheclient.metadata.oci_image import OCI_LAYOUT, is_oci_url, read_config_spec
from cacheclient.metadata.specfile import SpecFile, read_specfile
from cacheclient.mirrors.push_prepare import PreparedBuild, prepare
from cacheclient.model import BuildRecord
from cacheclient.resolution.spec import Request, parse_request
from cacheclient.store import Store, StoredBuild

__all__ = ["push", "select_builds"]


def __dir__() -> list[str]:
    return __all__


def _spec(store: Store, build: StoredBuild) -> SpecFile | None:
    try:
        raw = store.blob_path(build.spec_blob.checksum).read_bytes()
        where = str(store.blob_path(build.spec_blob.checksum))
        if build.layout == OCI_LAYOUT:
            return read_config_spec(raw, where)
        return read_specfile(raw, where)
    except (OSError, ValueError):
        return None


def _matches(request: Request, record: BuildRecord) -> bool:
    if request.hash_prefix and not record.hash.startswith(request.hash_prefix):
        return False
    if request.name and request.name != record.name:
        return False
    if request.versions is not None and not request.versions.contains(record.version):
        return False
    for variant in request.variants:
        if not variant.satisfied_by(record.variants.get(variant.name)):
            return False
    for want, have in (
        (request.platform, record.platform),
        (request.os, record.os),
        (request.target, record.target),
    ):
        if want and want != have:
            return False
    return True


def _closure(store: Store, roots: Sequence[str]) -> list[str]:
    """*roots* and every runtime dependency the store holds, dependencies first."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(dag_hash: str) -> None:
        if dag_hash in seen:
            return
        seen.add(dag_hash)
        build = store.load_build(dag_hash)
        spec = _spec(store, build) if build is not None else None
        if spec is not None:
            for dep in spec.root.runtime_dependencies():
                node = spec.nodes.get(dep.hash)
                # A dependency the store lacks is not pushed on its own: preparing the build
                # that needs it then says which one is missing.
                if node is not None and not node.is_external and store.load_build(dep.hash):
                    visit(dep.hash)
        order.append(dag_hash)

    for root in roots:
        visit(root)
    return order


def select_builds(
    store: Store,
    *,
    specs: Sequence[str] = (),
    lock: Lock | None = None,
    everything: bool = False,
) -> list[str]:
    """The DAG hashes to push, closures included, dependencies first.

    :raises UsageError: nothing, or more than one kind of selection, was given.
    :raises NoMatchError: a spec matches no build in the store.
    """
    kinds = sum((bool(specs), lock is not None, everything))
    if kinds != 1:
        raise UsageError("push: name SPECs, or give --from-lock FILE, or --all (exactly one)")
    if lock is not None:
        return _closure(store, lock.all_hashes())
    stored = store.builds()
    if everything:
        return _closure(store, [b.hash for b in stored])
    roots: list[str] = []
    records = [(b, _spec(store, b)) for b in stored]
    for text in specs:
        request = parse_request(text)
        hits = [b.hash for b, spec in records if spec is not None and _matches(request, spec.root)]
        if not hits:
            raise NoMatchError(f"push: {text!r} matches no build in the store {store.root}")
        roots.extend(h for h in hits if h not in roots)
    return _closure(store, roots)


def push(
    store: Store,
    destination: str,
    hashes: Sequence[str],
    *,
    update_index: bool = True,
    mount_from: str | None = None,
    progress: Callable[[str], None] | None = None,
    jobs: int = 8,
) -> dict[str, Any]:
    """Push the builds *hashes* from *store* to *destination*; a report as a dict.

    :raises StoreError: a build or a dependency's tarball is not in the store (nothing is
        pushed then: every build is prepared before the first byte goes out).
    """
    prepared: list[PreparedBuild] = [prepare(store, h) for h in hashes]
    if is_oci_url(destination):
        from cacheclient.mirrors.oci_push import push_to_registry  # noqa: PLC0415
        from cacheclient.transport import transport_for  # noqa: PLC0415
        from cacheclient.transport.oci import OciTransport, parse_oci_url  # noqa: PLC0415

        ref = parse_oci_url(destination)
        transport = transport_for(ref.url)
        if not isinstance(transport, OciTransport):
            raise UsageError(f"{destination}: the oci transport is overridden by a plugin")
        report = push_to_registry(
            prepared,
            ref,
            transport,
            store,
            update_index=update_index,
            mount_from=mount_from,
            progress=progress,
            jobs=jobs,
        )
        return report.to_dict()
    from cacheclient.mirrors.dir_push import push_to_directory  # noqa: PLC0415

    return push_to_directory(prepared, destination, store, progress=progress).to_dict()
