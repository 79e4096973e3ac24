"""Property tests: the selection passes every filter, is never outranked, ignores input order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cacheclient.metadata.catalog import Catalog
from cacheclient.model import BuildRecord, Libc
from cacheclient.resolution.compat import compatible_targets, libc_for_os, libc_version_ok
from cacheclient.resolution.host import HostProfile
from cacheclient.resolution.resolve import resolve
from cacheclient.resolution.spec import parse_request
from cacheclient.resolution.versions import Version

VERSIONS = ["0.9", "1.0", "1.0.1", "1.2", "1.2.0-rc1", "2.0", "develop"]
OSES = ["ubuntu20.04", "ubuntu22.04", "ubuntu24.04", "debian12", "plan9"]
TARGETS = ["x86_64", "x86_64_v2", "x86_64_v3", "x86_64_v4", "haswell", "zen2", "zen4", "aarch64"]
HOST_TARGETS = ["x86_64_v2", "x86_64_v3", "haswell", "zen4", "icelake", "neoverse_v2"]
STACKS = ["e4s", "root", "ml"]
REQUESTS = ["pkg", "pkg@1.0:", "pkg@:1.2", "pkg +shared", "pkg ~shared", "pkg@=1.0", "pkg@1.2"]

HASH_CHARS = "abcdefghijklmnopqrstuvwxyz234567"


@st.composite
def records(draw: st.DrawFn) -> list[BuildRecord]:
    n = draw(st.integers(min_value=0, max_value=12))
    hashes = draw(
        st.lists(
            st.text(alphabet=HASH_CHARS, min_size=32, max_size=32),
            min_size=n,
            max_size=n,
            unique=True,
        )
    )
    out = []
    for h in hashes:
        out.append(
            BuildRecord(
                name="pkg",
                version=draw(st.sampled_from(VERSIONS)),
                hash=h,
                platform=draw(st.sampled_from(["linux", "linux", "darwin"])),
                os=draw(st.sampled_from(OSES)),
                target=draw(st.sampled_from(TARGETS)),
                variants={"shared": draw(st.booleans())},
                stacks=tuple(sorted(draw(st.sets(st.sampled_from(STACKS))))),
                installable=draw(st.sampled_from([True, True, True, False])),
            )
        )
    return out


hosts = st.builds(
    lambda os_name, target: HostProfile(
        platform="linux", os=os_name, target=target, libc=libc_for_os(os_name)
    ),
    st.sampled_from(OSES[:4]),
    st.sampled_from(HOST_TARGETS),
)


def passes_filters(r: BuildRecord, host: HostProfile, policy: str, request: str) -> bool:
    req = parse_request(request)
    if not r.installable:
        return False
    if r.platform != host.platform or r.target not in compatible_targets(host.target):
        return False
    if r.os != host.os:
        if policy == "exact":
            return False
        build_libc = libc_for_os(r.os)
        if build_libc is None or host.libc is None or not libc_version_ok(build_libc, host.libc):
            return False
    if req.versions is not None and not req.versions.contains(r.version):
        return False
    return all(v.satisfied_by(r.variants.get(v.name)) for v in req.variants)


def preference(r: BuildRecord, host: HostProfile, pinned: bool) -> tuple[object, ...]:
    """The first three ranking criteria, as a key where smaller is better."""
    version = Version.parse(r.version)
    return (
        0 if pinned else _Desc(version),
        0 if r.os == host.os else 1,
        compatible_targets(host.target).index(r.target),
    )


class _Desc:
    """Reverses the order of a version inside a sort key."""

    def __init__(self, v: Version) -> None:
        self.v = v

    def __lt__(self, other: _Desc) -> bool:
        return self.v > other.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.v == other.v

    def __hash__(self) -> int:
        return hash(self.v)


@settings(max_examples=150, deadline=None)
@given(
    recs=records(),
    host=hosts,
    policy=st.sampled_from(["exact", "libc"]),
    request=st.sampled_from(REQUESTS),
)
def test_selected_passes_filters_and_is_never_outranked(
    recs: list[BuildRecord], host: HostProfile, policy: str, request: str
) -> None:
    (res,) = resolve([request], Catalog(recs, source="p"), host, os_compat=policy)
    accepted = [c for c in res.candidates if c.accepted]
    # dependency-only records are never candidates
    assert all(c.record.installable for c in res.candidates)
    # the accepted set is exactly the records passing every filter
    assert {c.record.hash for c in accepted} == {
        r.hash for r in recs if passes_filters(r, host, policy, request)
    }
    for c in res.candidates:
        assert (c.rank is not None) == c.accepted
        assert c.accepted or all(reason.message for reason in c.reasons)
    if res.selected is None:
        assert not accepted
        return
    assert passes_filters(res.selected, host, policy, request)
    pinned = request.startswith("pkg@=")
    best = preference(res.selected, host, pinned)
    for c in accepted:
        assert not preference(c.record, host, pinned) < best
    assert [c.rank for c in accepted] == list(range(1, len(accepted) + 1))


@settings(max_examples=100, deadline=None)
@given(
    recs=records(),
    host=hosts,
    policy=st.sampled_from(["exact", "libc"]),
    request=st.sampled_from(REQUESTS),
    data=st.data(),
)
def test_shuffling_never_changes_the_answer(
    recs: list[BuildRecord], host: HostProfile, policy: str, request: str, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(recs))
    (a,) = resolve([request], Catalog(recs, source="p"), host, os_compat=policy)
    (b,) = resolve([request], Catalog(shuffled, source="p"), host, os_compat=policy)
    assert a.to_dict() == b.to_dict()


@settings(max_examples=50, deadline=None)
@given(recs=records(), host=hosts)
def test_libc_policy_accepts_a_superset_of_exact(
    recs: list[BuildRecord], host: HostProfile
) -> None:
    (exact,) = resolve(["pkg"], Catalog(recs, source="p"), host, os_compat="exact")
    (libc,) = resolve(["pkg"], Catalog(recs, source="p"), host, os_compat="libc")
    assert {c.record.hash for c in exact.candidates if c.accepted} <= {
        c.record.hash for c in libc.candidates if c.accepted
    }
    assert host.libc is None or isinstance(host.libc, Libc)
