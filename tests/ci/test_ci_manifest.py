from __future__ import annotations

import pytest

from cacheclient.ci.manifest import MirrorEntry, Profile, parse_manifest_text
from cacheclient.errors import ConfigError

GOOD = """\
mirrors:
  - url: https://binaries.spack.io/develop    # order is priority
    signed: true
  - file:///srv/mirror
metadata: [pages/py-pyproject-hooks.cache-page.md]
profiles:
  - {platform: linux, os: ubuntu24.04, target: x86_64_v3}
  - {platform: linux, os: ubuntu22.04, target: neoverse_v1, os_compat: libc}
specs: [py-pyproject-hooks@1.2, demo-tool+docs]
"""


def _no_spec_problem(text: str) -> str | None:
    return "bad spec" if "!" in text else None


class TestParseManifest:
    def test_reads_every_field(self) -> None:
        m = parse_manifest_text(GOOD, "m.yaml", spec_ok=_no_spec_problem)
        assert m.mirrors == (
            MirrorEntry(url="https://binaries.spack.io/develop", signed=True),
            MirrorEntry(url="file:///srv/mirror", signed=True),
        )
        assert m.metadata == ("pages/py-pyproject-hooks.cache-page.md",)
        assert m.profiles[1] == Profile(
            platform="linux", os="ubuntu22.04", target="neoverse_v1", os_compat="libc"
        )
        assert m.specs == ("py-pyproject-hooks@1.2", "demo-tool+docs")

    def test_profiles_are_optional(self) -> None:
        m = parse_manifest_text("mirrors: [/m]\nspecs: [zlib]\n", "m.yaml", spec_ok=lambda s: None)
        assert m.profiles == ()

    def test_every_problem_is_listed_with_its_line(self) -> None:
        text = """\
mirrors:
  - url: /m
    signd: false
profiles:
  - {platform: linux, os: ubunut22.04, target: x86_64_v3}
  - {platform: linux, os: ubuntu22.04, target: haswel}
specs: [zlib, "oops!"]
extra: 1
"""
        with pytest.raises(ConfigError) as info:
            parse_manifest_text(text, "m.yaml", spec_ok=_no_spec_problem)
        problems = info.value.problems
        assert len(problems) == 5, problems
        joined = "\n".join(problems)
        assert "line 3: unknown key 'signd'" in joined
        assert "did you mean 'signed'" in joined
        assert "line 5: unknown OS 'ubunut22.04' (did you mean 'ubuntu22.04'?)" in joined
        assert "line 6: unknown target 'haswel' (did you mean 'haswell'?)" in joined
        assert "line 7: specs[1]: bad spec" in joined
        assert "line 8: unknown key 'extra'" in joined
        assert str(info.value).startswith("m.yaml: 5 problems:")
        assert info.value.exit_code == 2

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", "the manifest is empty"),
            ("mirrors: [/m]\nspecs: [a\n", "invalid YAML"),
            ("- a\n- b\n", "the manifest must be a mapping"),
            ("specs: [zlib]\n", "name at least one mirror"),
            ("mirrors: [/m]\n", "needs 'specs'"),
            ("mirrors: /m\nspecs: [z]\n", "mirrors must be a list"),
            ("mirrors: [{signed: true}]\nspecs: [z]\n", "mirrors[0] needs a 'url'"),
            ("mirrors: [{url: /m, signed: maybe}]\nspecs: [z]\n", "signed must be true or false"),
            ("mirrors: [/m]\nprofiles: []\nspecs: [z]\n", "profiles must be a non-empty list"),
            ("mirrors: [/m]\nprofiles: [{os: debian12}]\nspecs: [z]\n", "needs 'platform'"),
            (
                "mirrors: [/m]\nprofiles: [{platform: linx, os: debian12, target: x86_64}]\n"
                "specs: [z]\n",
                "unknown platform 'linx'",
            ),
            (
                "mirrors: [/m]\nprofiles: [{platform: linux, os: debian12, target: x86_64,"
                " os_compat: any}]\nspecs: [z]\n",
                "os_compat must be 'exact' or 'libc'",
            ),
        ],
    )
    def test_bad_manifests(self, text: str, expected: str) -> None:
        with pytest.raises(ConfigError, match=r"m\.yaml") as info:
            parse_manifest_text(text, "m.yaml", spec_ok=lambda s: None)
        assert expected in str(info.value)
