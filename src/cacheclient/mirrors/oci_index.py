"""The catalog of a Spack build cache in an OCI registry: the ``index.spack`` image (FORMATS §7).

:func:`read_oci_index` GETs the ``index.spack`` manifest (conditionally, with the ETag of the
last read) and, when its database layer changed, that layer; both are checked against their
digests by the transport. The index only says where to look (it is untrusted); every build is
checked when it is fetched.

A cache without an ``index.spack`` tag is an error that says so, unless the tag-listing fallback
was asked for (``CACHECLIENT_OCI_LIST_TAGS=1``): then every ``*.spack`` tag is listed and each
image's config read (two requests per build) to build the same database in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cacheclient.errors import MetadataError, VerificationError
from cacheclient.metadata.catalog import Catalog
from cacheclient.metadata.database import parse_database
from cacheclient.metadata.oci_image import (
    INDEX_TAG,
    OCI_LAYOUT,
    blob_relative,
    build_tag,
    is_build_tag,
    is_oci_url,
    parse_image_manifest,
    read_config_spec,
)

if TYPE_CHECKING:
    from cacheclient.transport import Transport

__all__ = [
    "LIST_TAGS_ENV",
    "OCI_INDEX_PATH",
    "OCI_LAYOUT",
    "OciIndex",
    "database_json",
    "is_oci_url",
    "list_tags_wanted",
    "open_oci_catalog",
    "read_oci_index",
]


def __dir__() -> list[str]:
    return __all__


LIST_TAGS_ENV = "CACHECLIENT_OCI_LIST_TAGS"
"""Set to ``1`` to build the catalog of an OCI cache without ``index.spack`` from its tags."""


OCI_INDEX_PATH = f"manifests/{INDEX_TAG}"
"""The index image's manifest, below an ``oci://`` mirror URL."""


def _below(base: str, relative: str) -> str:
    """*relative* below a mirror URL (the transport package is imported only for requests)."""
    return f"{base.rstrip('/')}/{relative}"


def list_tags_wanted(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get(LIST_TAGS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, kw_only=True, slots=True)
class OciIndex:
    """What one read of a registry's index found."""

    index_hash: str
    """sha256 hex of the database JSON (the index image's layer)."""
    etag: str | None
    data: bytes | None
    """The database JSON; ``None`` when it did not change since *index_hash* was read."""
    source: str


def read_oci_index(
    transport: Transport,
    url: str,
    *,
    old_hash: str | None = None,
    old_etag: str | None = None,
    list_tags: bool | None = None,
) -> OciIndex:
    """Read the ``index.spack`` database of the OCI cache at *url*.

    :raises MetadataError: no index (and no fallback asked for), or a malformed one;
        :raises VerificationError: a digest does not match; :raises DownloadError: unreachable.
    """
    manifest_url = _below(url, OCI_INDEX_PATH)
    fetched = transport.get(manifest_url, etag=old_etag if old_hash else None)
    if fetched is None:
        if list_tags if list_tags is not None else list_tags_wanted():
            return _from_tags(transport, url, old_hash)
        raise MetadataError(
            url,
            "",
            f"no {INDEX_TAG} tag: this OCI build cache has no index. Push with "
            "`cacheclient push` or `spack buildcache push --update-index`, or set "
            f"{LIST_TAGS_ENV}=1 to list its tags instead (two requests per build)",
        )
    if fetched.status == 304 and old_hash:
        return OciIndex(index_hash=old_hash, etag=fetched.etag, data=None, source=manifest_url)
    manifest = parse_image_manifest(fetched.body, manifest_url)
    layer = manifest.layers[0]
    if old_hash == layer.checksum:
        return OciIndex(index_hash=old_hash, etag=fetched.etag, data=None, source=manifest_url)
    blob_url = _below(url, blob_relative(layer.checksum))
    data = transport.read(blob_url, retry_not_found=True)
    if data is None:
        raise MetadataError(blob_url, "", "index blob named by index.spack does not exist")
    if len(data) != layer.size:
        raise VerificationError(
            f"{blob_url}: {len(data)} bytes, but index.spack says {layer.size}",
            url=blob_url,
            mirror=url,
            expected=str(layer.size),
            actual=str(len(data)),
        )
    return OciIndex(index_hash=layer.checksum, etag=fetched.etag, data=data, source=blob_url)


def open_oci_catalog(url: str) -> Catalog:
    """The catalog of the OCI cache at *url*, read directly (no cache in a store)."""
    from cacheclient.transport import transport_for  # noqa: PLC0415 - only for a request

    found = read_oci_index(transport_for(url), url)
    if found.data is None:  # pragma: no cover - nothing was cached to compare with
        raise MetadataError(url, "", "the index could not be read")
    catalog = parse_database(found.data, found.source, stacks=(url,))
    catalog.source = url
    return catalog


def _from_tags(transport: Transport, url: str, old_hash: str | None) -> OciIndex:
    from cacheclient.transport.oci import OciTransport, parse_oci_url  # noqa: PLC0415

    ref = parse_oci_url(url)
    if not isinstance(transport, OciTransport):
        raise MetadataError(url, "", "tag listing needs cacheclient's own OCI transport")
    nodes: dict[str, dict[str, Any]] = {}
    held: set[str] = set()
    for tag in sorted(t for t in transport.list_tags(ref) if is_build_tag(t)):
        got = transport.manifest(ref, tag)
        if got is None:
            continue  # deleted since the listing
        body, _digest = got
        where = _below(url, f"manifests/{tag}")
        manifest = parse_image_manifest(body, where)
        config_url = _below(url, blob_relative(manifest.config.checksum))
        config = transport.read(config_url)
        if config is None:
            raise MetadataError(config_url, "", f"config blob of {tag} does not exist")
        spec = read_config_spec(config, config_url)
        if build_tag(spec.root.name, spec.root.version, spec.root.hash) != tag:
            continue  # a tag that does not name its own build: not Spack's
        held.add(spec.root.hash)
        raw = json.loads(config)["spec"]["nodes"]
        for node in raw:
            if isinstance(node, dict) and isinstance(node.get("hash"), str):
                nodes.setdefault(node["hash"], node)
    data = database_json(nodes, held)
    digest = hashlib.sha256(data).hexdigest()
    return OciIndex(
        index_hash=digest,
        etag=None,
        data=None if digest == old_hash else data,
        source=f"{url} (tag listing)",
    )


def database_json(nodes: Mapping[str, Mapping[str, Any]], held: set[str]) -> bytes:
    """A Spack database (version 8) holding *nodes*, those in *held* ``in_buildcache``."""
    ref_count = dict.fromkeys(nodes, 0)
    for node in nodes.values():
        for dep in node.get("dependencies", []) or []:
            if isinstance(dep, dict) and dep.get("hash") in ref_count:
                ref_count[str(dep["hash"])] += 1
    installs = {
        h: {"spec": dict(node), "ref_count": ref_count[h], "in_buildcache": h in held}
        for h, node in sorted(nodes.items())
    }
    return json.dumps(
        {"database": {"version": "8", "installs": installs}}, separators=(",", ":")
    ).encode()
