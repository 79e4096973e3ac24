"""Where each file of a Spack binary mirror lives, for layouts v3 and v2 (FORMATS §2, §10).

All paths are relative to the mirror root and use ``/``. Name components pass through
:func:`polite_filename` exactly like Spack's ``Spec.format_path`` (pitfall 2). A mirror in an
OCI registry (:func:`is_oci_url`) has layout :data:`OCI_LAYOUT` instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from cacheclient.errors import MetadataError
from cacheclient.model import BuildRecord

__all__ = [
    "INDEX_V2",
    "INDEX_V2_HASH",
    "INDEX_V3",
    "KEYS_V3",
    "LAYOUT_JSON",
    "OCI_LAYOUT",
    "blob_path",
    "detect_layouts",
    "hash_from_manifest_name",
    "is_oci_url",
    "polite_filename",
    "spec_manifest_path",
    "split_compiler",
    "v2_basename",
    "v2_specfile_paths",
    "v2_tarball_path",
]


def __dir__() -> list[str]:
    return __all__


INDEX_V3 = "v3/manifests/index/index.manifest.json"
INDEX_V2 = "build_cache/index.json"
INDEX_V2_HASH = "build_cache/index.json.hash"
LAYOUT_JSON = "v3/layout.json"
KEYS_V3 = "v3/manifests/key/keys.manifest.json"
OCI_LAYOUT = 100
"""The ``layout`` number cacheclient gives builds read from an OCI registry in its store
records and locks (Spack's URL layouts are 2 and 3; this one is not Spack's). A registry's
formats are in :mod:`cacheclient.metadata.oci_image`; this and :func:`is_oci_url` are here so
that opening a mirror that is not a registry does not import them."""

_OCI_SCHEMES = ("oci", "oci+http", "oci+https")

_IMPOLITE = re.compile(r"[^A-Za-z0-9_+.-]")
_HASH = re.compile(r"^[a-z0-9]{32}$")


def is_oci_url(url: str) -> bool:
    """Whether *url* names an OCI registry repository (``oci://`` or ``oci+http://``).

    >>> is_oci_url("oci://ghcr.io/spack/cache"), is_oci_url("https://mirror.example")
    (True, False)
    """
    scheme, sep, _rest = url.partition("://")
    return bool(sep) and scheme.lower() in _OCI_SCHEMES


def polite_filename(component: str) -> str:
    """Replace every character outside ``[A-Za-z0-9_+.-]`` by ``_`` (one path component).

    >>> polite_filename("foo-git.main=1.2-abc")
    'foo-git.main_1.2-abc'
    """
    return _IMPOLITE.sub("_", component)


def spec_manifest_path(name: str, version: str, dag_hash: str) -> str:
    """The v3 spec manifest of one build.

    >>> spec_manifest_path("zlib", "1.3.1", "a" * 32)[:38]
    'v3/manifests/spec/zlib/zlib-1.3.1-aaaa'
    """
    base = polite_filename(f"{name}-{version}-{dag_hash}")
    return f"v3/manifests/spec/{polite_filename(name)}/{base}.spec.manifest.json"


def hash_from_manifest_name(path: str) -> str | None:
    """The DAG hash at the end of a spec manifest file name, or ``None`` if there is none."""
    name = path.rsplit("/", 1)[-1]
    if not name.endswith(".spec.manifest.json"):
        return None
    last = name[: -len(".spec.manifest.json")].rsplit("-", 1)[-1]
    return last if _HASH.match(last) else None


def blob_path(checksum: str, algorithm: str = "sha256") -> str:
    """``blobs/<algorithm>/<checksum[:2]>/<checksum>``."""
    return f"blobs/{algorithm}/{checksum[:2]}/{checksum}"


def split_compiler(compiler: str | None) -> tuple[str, str]:
    """``(name, version)`` of a compiler string as v2 file names need it (pitfall 3).

    Accepts ``gcc@=10.2.1``, ``gcc@10.2.1`` and ``none``/``None`` (no compiler: the
    ``none-none`` case of Spack 1.x).

    >>> split_compiler("gcc@=10.2.1"), split_compiler(None)
    (('gcc', '10.2.1'), ('none', 'none'))
    """
    if compiler is None or compiler in ("", "none"):
        return ("none", "none")
    name, _, version = compiler.partition("@")
    version = version.lstrip("=")
    return (name or "none", version or "none")


def v2_basename(record: BuildRecord) -> str:
    """``<platform>-<os>-<target>-<compiler>-<compiler version>-<name>-<version>-<hash>``."""
    cname, cversion = split_compiler(record.compiler)
    return polite_filename(
        f"{record.arch}-{cname}-{cversion}-{record.name}-{record.version}-{record.hash}"
    )


def v2_specfile_paths(record: BuildRecord) -> tuple[str, str]:
    """``(signed, unsigned)`` spec file paths of a v2 build; Spack tries the signed one first."""
    base = f"build_cache/{v2_basename(record)}"
    return (f"{base}.spec.json.sig", f"{base}.spec.json")


def v2_tarball_path(record: BuildRecord) -> str:
    """``build_cache/<arch>/<compiler>-<version>/<name>-<version>/<basename>.spack``."""
    cname, cversion = split_compiler(record.compiler)
    parts = (
        polite_filename(record.arch),
        polite_filename(f"{cname}-{cversion}"),
        polite_filename(f"{record.name}-{record.version}"),
        f"{v2_basename(record)}.spack",
    )
    return "build_cache/" + "/".join(parts)


def detect_layouts(read: Callable[[str], bytes | None], where: str) -> tuple[int, ...]:
    """Which layouts a mirror holds, best first: ``(3,)``, ``(2,)`` or ``(3, 2)``.

    *read* maps a relative path to its bytes or ``None`` when it does not exist. v3 is seen
    through its index manifest, v2 through ``index.json.hash`` or ``index.json``.

    :raises MetadataError: when neither layout is there (names *where*).
    """
    found: list[int] = []
    if read(INDEX_V3) is not None:
        found.append(3)
    if read(INDEX_V2_HASH) is not None or read(INDEX_V2) is not None:
        found.append(2)
    if not found:
        problem = f"not a Spack binary mirror: neither {INDEX_V3} nor {INDEX_V2} found at {where}"
        if _has_legacy_yaml(where):
            problem = (
                "a layout-0 mirror (build_cache/*.spec.yaml, Spack 0.17 and older), "
                "which cacheclient does not read (nor does Spack 1.x): rebuild or migrate it"
            )
        raise MetadataError(where, "", problem)
    return tuple(found)


def _has_legacy_yaml(where: str) -> bool:
    """Whether a local mirror holds only layout-0 ``*.spec.yaml`` files (a hint for errors)."""
    if "://" in where and not where.startswith("file://"):
        return False
    folder = Path(where.removeprefix("file://")) / "build_cache"
    try:
        return any(p.name.endswith(".spec.yaml") for p in folder.iterdir())
    except OSError:
        return False
