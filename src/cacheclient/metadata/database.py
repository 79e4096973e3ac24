"""Spack Database JSON: the v2 ``build_cache/index.json`` and the v3 ``db.v8`` index blob.

Layout (FORMATS §3)::

    {"database": {"version": "8",
                  "installs": {"<hash>": {"spec": <one node>, "ref_count": N,
                                          "in_buildcache": true}, ...}}}

Database versions 6, 7 and 8 are read; anything else is refused, never guessed (pitfall 9).
Indexes hold 60,000+ records, so :func:`parse_database` only groups hashes by package name
after the JSON parse; a :class:`~cacheclient.model.BuildRecord` is built on first access
(see :class:`~cacheclient.metadata.catalog.Catalog`).

This module also holds :func:`record_from_node`, the node-dict reader shared with
:mod:`cacheclient.metadata.specfile` (specfile formats 2-5).
"""

from __future__ import annotations

import codecs
import contextlib
import gc
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeGuard

import msgspec

from cacheclient.errors import MetadataError
from cacheclient.metadata.catalog import Catalog
from cacheclient.metadata.manifest import decode_text
from cacheclient.model import BuildRecord, Dependency, Libc, VariantValue, is_valid_hash

__all__ = [
    "COMPILER_FLAGS",
    "COMPILER_VIRTUALS",
    "SUPPORTED_DB_VERSIONS",
    "catalog_from_database",
    "check_db_version",
    "explain_bad_entry",
    "gc_paused",
    "load_json",
    "parse_database",
    "record_from_node",
    "variant_value",
]


def __dir__() -> list[str]:
    return __all__


SUPPORTED_DB_VERSIONS = ("6", "7", "8")
COMPILER_FLAGS = frozenset({"cflags", "cppflags", "cxxflags", "fflags", "ldflags", "ldlibs"})
COMPILER_VIRTUALS = ("c", "cxx", "fortran")
_HASH_KEYS = ("hash", "full_hash", "build_hash")

NodeLookup = Callable[[str], "Mapping[str, Any] | None"]
"""Finds another node dict of the same DAG/index by hash (for compiler and libc providers)."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a bulk read (restored after).

    Reading a 100 MB index makes millions of containers, none of them part of a cycle; with the
    collector on, most of the time goes to walking them again and again (``json.load`` of the
    60,000-record bench index: 6.5 s with it, 1.3 s without; bench/bench_index_speed.py).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_decode_json = msgspec.json.Decoder().decode


def load_json(data: bytes | str, source: str) -> Any:
    """Parse JSON (bytes must be UTF-8, a leading BOM is allowed); :class:`MetadataError` on any
    problem. msgspec is used: the fastest of json, orjson and msgspec measured on real-sized
    indexes (bench/bench_index_speed.py)."""
    try:
        with gc_paused():
            return _decode_json(data)
    except msgspec.DecodeError as exc:
        text = decode_text(data, source)  # not UTF-8: a clearer message
        if isinstance(data, bytes) and data.startswith(codecs.BOM_UTF8):
            return load_json(text, source)
        raise MetadataError(source, "", f"invalid JSON: {exc}") from None
    except RecursionError:
        raise MetadataError(source, "", "invalid JSON: nested too deeply") from None


def _is_hash(value: object) -> TypeGuard[str]:
    return is_valid_hash(value)


def _type_name(value: object) -> str:
    return "missing" if value is None else type(value).__name__


def _str(node: Mapping[str, Any], key: str, path: str, source: str) -> str:
    value = node.get(key)
    if not isinstance(value, str) or not value:
        raise MetadataError(
            source, f"{path}.{key}", f"expected a non-empty string, got {_type_name(value)}"
        )
    return value


def _version(node: Mapping[str, Any], path: str, source: str) -> str:
    value = node.get("version")
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    versions = node.get("versions")  # abstract form; concrete specs hold exactly one
    if isinstance(versions, list) and len(versions) == 1 and isinstance(versions[0], str):
        return versions[0].lstrip("=")
    raise MetadataError(
        source, f"{path}.version", f"expected a version string, got {_type_name(value)}"
    )


def variant_value(value: Any, path: str, source: str) -> VariantValue:
    """A variant value as the model keeps it (lists sorted into tuples, numbers as strings).

    :raises MetadataError: not a bool, string, number or list of those.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        items = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise MetadataError(
                    source, f"{path}[{i}]", f"expected a string, got {_type_name(item)}"
                )
            items.append(str(item))
        return tuple(sorted(items))
    raise MetadataError(source, path, f"expected a bool, string or list, got {_type_name(value)}")


def _dependencies(raw: Any, path: str, source: str) -> tuple[Dependency, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MetadataError(source, path, f"expected a list, got {_type_name(raw)}")
    deps = []
    for i, edge in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(edge, dict):
            raise MetadataError(source, where, f"expected an object, got {_type_name(edge)}")
        name = _str(edge, "name", where, source)
        dep_hash = next((edge[k] for k in _HASH_KEYS if k in edge), None)
        if not _is_hash(dep_hash):
            raise MetadataError(
                source, f"{where}.hash", f"not a 32-character DAG hash: {dep_hash!r:.40}"
            )
        params = edge.get("parameters")
        if isinstance(params, dict):  # specfile formats 4 and 5
            types = params.get("deptypes", [])
            virtuals = params.get("virtuals", [])
            tpath = f"{where}.parameters.deptypes"
        else:  # formats 2 and 3
            types = edge.get("type", [])
            virtuals = []
            tpath = f"{where}.type"
        if isinstance(types, str):
            types = [types]
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise MetadataError(source, tpath, "expected a list of dependency types")
        if not isinstance(virtuals, list) or not all(isinstance(v, str) for v in virtuals):
            raise MetadataError(
                source, f"{where}.parameters.virtuals", "expected a list of strings"
            )
        deps.append(
            Dependency(
                name=name, hash=dep_hash, deptypes=frozenset(types), virtuals=tuple(virtuals)
            )
        )
    return tuple(deps)


def _compiler(
    node: Mapping[str, Any],
    deps: tuple[Dependency, ...],
    lookup: NodeLookup,
    path: str,
    source: str,
) -> str | None:
    raw = node.get("compiler")
    if raw is not None:  # specfile format <= 4
        if not isinstance(raw, dict):
            raise MetadataError(source, f"{path}.compiler", "expected an object")
        name = _str(raw, "name", f"{path}.compiler", source)
        version = raw.get("version")
        if isinstance(version, list) and version:  # very old: versions list
            version = version[0]
        if not isinstance(version, str) or not version:
            raise MetadataError(source, f"{path}.compiler.version", "expected a string")
        return f"{name}@={version.lstrip('=')}"
    annotations = node.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise MetadataError(source, f"{path}.annotations", "expected an object")
    if annotations and "compiler" in annotations:  # old specs re-indexed by Spack 1.x
        value = annotations["compiler"]
        if not isinstance(value, str) or not value:
            raise MetadataError(source, f"{path}.annotations.compiler", "expected a string")
        return value
    for virtual in COMPILER_VIRTUALS:  # format 5: the provider of c, cxx or fortran
        for dep in deps:
            if virtual in dep.virtuals and "build" in dep.deptypes:
                provider = lookup(dep.hash)
                if provider is None:
                    return dep.name
                version = provider.get("version")
                return f"{dep.name}@={version}" if isinstance(version, str) else dep.name
    return None


def _libc(deps: tuple[Dependency, ...], lookup: NodeLookup) -> Libc | None:
    for dep in deps:
        if "libc" in dep.virtuals:
            node = lookup(dep.hash)
            if node is None:
                return None
            version = node.get("version")
            name = node.get("name")
            if isinstance(name, str) and isinstance(version, str):
                return Libc(name=name, version=version)
            return None
    return None


def record_from_node(
    node: Any,
    *,
    path: str,
    source: str,
    lookup: NodeLookup,
    installable: bool = True,
    stacks: tuple[str, ...] = (),
    manifest_path_for: Callable[[str, str, str], str] | None = None,
    expected_hash: str | None = None,
) -> BuildRecord:
    """Build one record from a Spack node dict (specfile formats 2-5 / DB versions 6-8).

    :param path: key path of the node, for error messages (``spec.nodes[0]``).
    :param lookup: other nodes of the same DAG or index, by hash (compiler, libc).
    :param manifest_path_for: ``(name, version, hash) -> path`` for v3 mirrors.
    :param expected_hash: when given, the node's ``hash`` must equal it.
    """
    if not isinstance(node, dict):
        raise MetadataError(source, path, f"expected an object, got {_type_name(node)}")
    name = _str(node, "name", path, source)
    version = _version(node, path, source)
    dag_hash = node.get("hash", expected_hash)
    if not _is_hash(dag_hash):
        raise MetadataError(
            source, f"{path}.hash", f"not a 32-character DAG hash: {dag_hash!r:.40}"
        )
    if expected_hash is not None and dag_hash != expected_hash:
        raise MetadataError(
            source, f"{path}.hash", f"{dag_hash} does not match its key {expected_hash}"
        )
    arch = node.get("arch")
    if not isinstance(arch, dict):
        raise MetadataError(source, f"{path}.arch", f"expected an object, got {_type_name(arch)}")
    platform = _str(arch, "platform", f"{path}.arch", source)
    os_name = _str(arch, "platform_os", f"{path}.arch", source)
    raw_target = arch.get("target")
    target_info: dict[str, Any] | None = None
    if isinstance(raw_target, dict):
        target = _str(raw_target, "name", f"{path}.arch.target", source)
        target_info = raw_target
    elif isinstance(raw_target, str) and raw_target:
        target = raw_target
    else:
        raise MetadataError(
            source,
            f"{path}.arch.target",
            f"expected a string or an object, got {_type_name(raw_target)}",
        )
    params = node.get("parameters", {})
    if not isinstance(params, dict):
        raise MetadataError(source, f"{path}.parameters", "expected an object")
    variants = {
        key: variant_value(value, f"{path}.parameters.{key}", source)
        for key, value in params.items()
        if key not in COMPILER_FLAGS
    }
    deps = _dependencies(node.get("dependencies"), f"{path}.dependencies", source)
    compiler = _compiler(node, deps, lookup, path, source)
    external = node.get("external")
    external_path: str | None = None
    if external is not None:
        if not isinstance(external, dict):
            raise MetadataError(source, f"{path}.external", "expected an object")
        ext = external.get("path")
        if ext is not None and not isinstance(ext, str):
            raise MetadataError(source, f"{path}.external.path", "expected a string")
        external_path = ext or ""
    namespace = node.get("namespace")
    return BuildRecord(
        name=name,
        version=version,
        hash=dag_hash,
        platform=platform,
        os=os_name,
        target=target,
        target_info=target_info,
        compiler=compiler,
        variants=variants,
        dependencies=deps,
        stacks=stacks,
        installable=installable and external_path is None,
        external_path=external_path,
        namespace=namespace if isinstance(namespace, str) else None,
        libc=_libc(deps, lookup),
        manifest_path=(
            manifest_path_for(name, version, dag_hash)
            if manifest_path_for is not None and external_path is None
            else None
        ),
        source=source,
    )


def check_db_version(db: Mapping[str, Any], source: str) -> str:
    """The DB version string; MetadataError for a version this reader does not know."""
    raw = db.get("version")
    version = str(raw) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else None
    if version is None:
        raise MetadataError(
            source, "database.version", f"expected a version string, got {_type_name(raw)}"
        )
    if version in SUPPORTED_DB_VERSIONS:
        return version
    supported = ", ".join(SUPPORTED_DB_VERSIONS)
    if version.isdigit() and int(version) > int(SUPPORTED_DB_VERSIONS[-1]):
        problem = (
            f"index database version {version} is newer than this cacheclient reads "
            f"({supported}); a newer cacheclient is needed"
        )
    else:
        problem = f"index database version {version!r} is not supported (only {supported})"
    raise MetadataError(source, "database.version", problem)


def catalog_from_database(
    obj: Any,
    source: str,
    *,
    stacks: tuple[str, ...] = (),
    manifest_path_for: Callable[[str, str, str], str] | None = None,
) -> Catalog:
    """A lazy :class:`Catalog` over an already-parsed Database JSON object.

    Hash keys, record objects and package names are checked up front (cheap); the rest of
    each record is checked when it is first built.
    """
    if not isinstance(obj, dict):
        raise MetadataError(source, "", f"expected a JSON object, got {_type_name(obj)}")
    db = obj.get("database")
    if not isinstance(db, dict):
        raise MetadataError(source, "database", f"expected an object, got {_type_name(db)}")
    check_db_version(db, source)
    installs = db.get("installs")
    if not isinstance(installs, dict):
        raise MetadataError(
            source, "database.installs", f"expected an object, got {_type_name(installs)}"
        )
    by_name: dict[str, list[str]] = {}
    for dag_hash, entry in installs.items():
        try:
            name = entry["spec"]["name"]
        except (TypeError, KeyError):
            name = None
        if not isinstance(name, str) or not is_valid_hash(dag_hash):
            explain_bad_entry(dag_hash, entry, source)
        bucket = by_name.get(name)
        if bucket is None:
            by_name[name] = [dag_hash]
        else:
            bucket.append(dag_hash)

    def lookup(dag_hash: str) -> Mapping[str, Any] | None:
        entry = installs.get(dag_hash)
        spec = entry.get("spec") if isinstance(entry, dict) else None
        return spec if isinstance(spec, dict) else None

    def build(dag_hash: str) -> BuildRecord | None:
        entry = installs.get(dag_hash)
        if entry is None:
            return None
        path = f"database.installs.{dag_hash}"
        in_cache = entry.get("in_buildcache", True)
        if not isinstance(in_cache, bool):
            raise MetadataError(source, f"{path}.in_buildcache", "expected true or false")
        return record_from_node(
            entry["spec"],
            path=f"{path}.spec",
            source=source,
            lookup=lookup,
            installable=in_cache,
            stacks=stacks,
            manifest_path_for=manifest_path_for,
            expected_hash=dag_hash,
        )

    return Catalog.lazy(source=source, by_name=by_name, build=build)


def explain_bad_entry(dag_hash: object, entry: object, source: str) -> None:
    """Raise the :class:`MetadataError` for an entry whose hash key, spec or name is bad."""
    path = f"database.installs.{str(dag_hash)[:40]}"  # a hostile key may be megabytes long
    if not is_valid_hash(dag_hash):
        raise MetadataError(source, path, f"not a 32-character DAG hash: {dag_hash!r:.40}")
    if not isinstance(entry, dict):
        raise MetadataError(source, path, f"expected an object, got {_type_name(entry)}")
    spec = entry.get("spec")
    if not isinstance(spec, dict):
        raise MetadataError(source, f"{path}.spec", f"expected an object, got {_type_name(spec)}")
    raise MetadataError(
        source, f"{path}.spec.name", f"expected a string, got {_type_name(spec.get('name'))}"
    )


def parse_database(
    data: bytes | str,
    source: str,
    *,
    stacks: tuple[str, ...] = (),
    manifest_path_for: Callable[[str, str, str], str] | None = None,
) -> Catalog:
    """Parse an index (Database JSON, versions 6-8) into a lazy :class:`Catalog`.

    :param stacks: given to every record (a mirror's records carry ``(mirror_url,)``).
    :param manifest_path_for: ``(name, version, hash) -> path`` when the index comes from a
        v3 mirror, so records know their spec manifest.
    :raises MetadataError: malformed JSON or structure, or an unknown database version.
    """
    return catalog_from_database(
        load_json(data, source), source, stacks=stacks, manifest_path_for=manifest_path_for
    )
