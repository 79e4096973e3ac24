"""``cacheclient inspect MIRROR_OR_PAGE``: what a mirror or a cache.spack.io page holds.

Prints the layout(s), counts per package, OS and target, installable versus dependency-only
records, and every problem found (records that do not parse, dependencies missing from the
index, meta/spec disagreements on pages). ``--check-files`` also looks for each installable
record's spec manifest (v3) or spec file (v2) in the mirror.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cacheclient.cli._common import add_store_option, print_json
from cacheclient.errors import MetadataError, UsageError
from cacheclient.metadata.catalog import Catalog
from cacheclient.metadata.layout import OCI_LAYOUT, detect_layouts, v2_specfile_paths
from cacheclient.metadata.manifest import decode_text
from cacheclient.metadata.page import read_page
from cacheclient.mirrors.open import local_reader, open_catalog
from cacheclient.model import BuildRecord
from cacheclient.settings import store_from_option
from cacheclient.store import Store

__all__ = ["inspect_source", "register", "run"]

Reader = Callable[[str], "bytes | None"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "inspect",
        help="show what a binary mirror or a cache.spack.io page holds",
        description="Show the layout of a Spack binary mirror (directory, file:// or http(s) "
        "URL) or the content of a cache.spack.io package page (.md file or URL): counts per "
        "package, OS and target, installable and dependency-only records, and problems found. "
        "Exit code 0 when it could be read (problems are listed), 7 when it is not readable "
        "metadata, 5 when it cannot be downloaded.",
    )
    parser.add_argument("source", metavar="MIRROR_OR_PAGE", help="mirror or page to inspect")
    parser.add_argument(
        "--check-files",
        action="store_true",
        help="also check that every installable record's spec manifest / spec file exists",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="never use the network: an http(s) mirror is read from the index the store cached",
    )
    add_store_option(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(func=run)


def _is_remote(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file:"))


def _reader(source: str) -> Reader:
    if source.startswith(("http://", "https://")):
        from cacheclient.transport import reader_for  # noqa: PLC0415 - only for URLs

        return reader_for(source)
    return local_reader(source)


def _looks_like_page(source: str) -> bool:
    if _is_url(source):
        return source.rstrip("/").endswith((".md", ".markdown"))
    return Path(source).is_file()


def _read_page_source(source: str) -> Catalog:
    if _is_url(source):
        base, _, name = source.rpartition("/")
        data = _reader(base)(name)
        if data is None:
            raise MetadataError(source, "", "page not found")
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise UsageError(f"{source}: cannot read: {exc.strerror or exc}") from None
    return read_page(decode_text(data, source), source)


def _record_rows(catalog: Catalog, problems: list[str]) -> Iterator[BuildRecord]:
    """Every record in name order, read in batches and not kept by the catalog (a 60,000-record
    index is one pass, not 60,000 queries and every record in memory); a malformed record is a
    problem, and the others of its batch are read one by one."""
    batch: list[str] = []

    def flush() -> Iterator[BuildRecord]:
        try:
            found = catalog.get_many(batch, keep=False)
        except MetadataError:
            found = {}
            for dag_hash in batch:
                try:
                    record = catalog.get_many([dag_hash], keep=False).get(dag_hash)
                except MetadataError as exc:
                    problems.append(str(exc))
                    continue
                if record is not None:
                    found[dag_hash] = record
        yield from (found[h] for h in batch if h in found)
        batch.clear()

    for name in catalog.names():
        batch.extend(catalog.hashes(name))
        if len(batch) >= _BATCH:
            yield from flush()
    yield from flush()


_BATCH = 500


def inspect_source(
    source: str, *, check_files: bool = False, offline: bool = False, store: Store | None = None
) -> dict[str, Any]:
    """Inspect a mirror or page and return the report as a JSON-able dict.

    *offline*: an http(s) mirror is read from the index cached in *store* (its files are not
    checked); an http(s) page cannot be read."""
    problems: list[str] = []
    layouts: list[int] = []
    remote = source.startswith(("http://", "https://"))
    if offline and remote and _looks_like_page(source):
        raise UsageError(f"--offline: the page {source} needs the network (save it to a file)")
    if offline and remote:
        from cacheclient.mirrors.indexcache import open_mirror  # noqa: PLC0415

        kind = "mirror"
        catalog = open_mirror(source, store=store, offline=True)
        read: Reader | None = None
        if check_files:
            problems.append("--check-files skipped: offline, the mirror's files cannot be read")
    elif _looks_like_page(source):
        kind = "page"
        catalog = _read_page_source(source)
        read = None
    else:
        kind = "mirror"
        if source.startswith(("s3://", "gs://")):
            scheme = source.split(":", 1)[0]
            raise UsageError(f"{source}: {scheme}:// mirrors are not supported (use http(s)://)")
        if source.startswith(("oci://", "oci+http://")):  # a registry (mirrors/oci_index.py)
            from cacheclient.mirrors.oci_index import open_oci_catalog  # noqa: PLC0415

            read, layouts, catalog = None, [OCI_LAYOUT], open_oci_catalog(source)
        else:
            if not _is_url(source) and not Path(source).is_dir():
                raise UsageError(f"{source}: no such directory, file or URL")
            read = _reader(source)
            layouts = list(detect_layouts(read, source))
            if _is_remote(source):
                catalog = open_catalog(source, read)  # every layout the server has, merged
            else:  # the same path as resolve/fetch: a large index is read once, then cached
                from cacheclient.mirrors.indexcache import open_mirror  # noqa: PLC0415
                from cacheclient.settings import store_from_option  # noqa: PLC0415

                catalog = open_mirror(source, store=store_from_option(None))
    known = set(catalog.hashes())
    dependency_problems: list[str] = []
    file_problems: list[str] = []
    packages: dict[str, dict[str, Any]] = {}
    totals: Counter[str] = Counter()
    all_os: Counter[str] = Counter()
    all_targets: Counter[str] = Counter()
    stacks: Counter[str] = Counter()
    for record in _record_rows(catalog, problems):  # one pass: records are not kept
        for dep in record.dependencies:
            if dep.hash not in known and kind == "mirror":
                dependency_problems.append(
                    f"{record.name}/{record.short_hash}: dependency {dep.name}/{dep.hash} "
                    "is not in the index"
                )
        if check_files and read is not None and record.installable:
            paths = (
                [record.manifest_path] if record.manifest_path else list(v2_specfile_paths(record))
            )
            if all(read(p) is None for p in paths):
                file_problems.append(f"{record.name}/{record.hash}: missing {' or '.join(paths)}")
        pkg = packages.setdefault(
            record.name,
            {"records": 0, "installable": 0, "versions": set(), "os": Counter(),
             "targets": Counter()},
        )  # fmt: skip
        pkg["records"] += 1
        pkg["installable"] += int(record.installable)
        pkg["versions"].add(record.version)
        pkg["os"][record.os] += 1
        pkg["targets"][record.target] += 1
        totals["records"] += 1
        totals["installable"] += record.installable
        totals["dependency_only"] += not record.installable and not record.is_external
        totals["externals"] += record.is_external
        all_os[record.os] += 1
        all_targets[record.target] += 1
        stacks.update(record.stacks)
    problems += dependency_problems + file_problems
    return {
        "source": source,
        "kind": kind,
        "layouts": layouts,
        "records": totals["records"],
        "installable": totals["installable"],
        "dependency_only": totals["dependency_only"],
        "externals": totals["externals"],
        "os": dict(sorted(all_os.items())),
        "targets": dict(sorted(all_targets.items())),
        "stacks": dict(sorted(stacks.items())) if kind == "page" else {},
        "packages": {
            name: {
                "records": p["records"],
                "installable": p["installable"],
                "versions": sorted(p["versions"]),
                "os": dict(sorted(p["os"].items())),
                "targets": dict(sorted(p["targets"].items())),
            }
            for name, p in sorted(packages.items())
        },
        "warnings": list(catalog.warnings),
        "problems": problems,
    }


def _print_text(report: dict[str, Any]) -> None:
    out = sys.stdout
    layout = ", ".join("oci" if v == OCI_LAYOUT else f"v{v}" for v in report["layouts"]) or "-"
    out.write(f"{report['kind']}: {report['source']}\n")
    if report["kind"] == "mirror":
        out.write(f"layout: {layout}\n")
    out.write(
        f"records: {report['records']} ({report['installable']} installable, "
        f"{report['dependency_only']} dependency-only, {report['externals']} external)\n"
    )
    for key, title in (("os", "os"), ("targets", "targets"), ("stacks", "stacks")):
        if report[key]:
            out.write(f"{title}: " + ", ".join(f"{k} ({v})" for k, v in report[key].items()) + "\n")
    if report["packages"]:
        width = max(len(n) for n in report["packages"])
        out.write(f"\n{'package':<{width}}  records  installable  versions\n")
        for name, p in report["packages"].items():
            out.write(
                f"{name:<{width}}  {p['records']:>7}  {p['installable']:>11}  "
                f"{', '.join(p['versions'])}\n"
            )
    for title in ("warnings", "problems"):
        if report[title]:
            out.write(f"\n{title} ({len(report[title])}):\n")
            for line in report[title]:
                out.write(f"  {line}\n")
    if not report["warnings"] and not report["problems"]:
        out.write("\nno problems found\n")


def run(args: argparse.Namespace) -> int:
    store = store_from_option(args.store) if args.offline else None
    report = inspect_source(
        args.source, check_files=args.check_files, offline=bool(args.offline), store=store
    )
    if args.json:
        print_json(report)
    else:
        _print_text(report)
    return 0
