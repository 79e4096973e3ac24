"""Host detection on recorded hosts: every os-release file and every archspec cpuinfo dump."""

from __future__ import annotations

import argparse
import json
import re
from functools import cache
from pathlib import Path

import pytest

from cacheclient.errors import ConfigError, UsageError
from cacheclient.model import Libc
from cacheclient.resolution.host import (
    HostProfile,
    detect_host,
    detect_target,
    os_from_os_release,
    parse_cpuinfo,
    parse_libc,
    parse_os_release,
    validate_target,
)
from cacheclient.settings import Config, config_path, host_from_args, load_config, parse_config
from paths import REALDATA

OS_RELEASE = REALDATA / "os-release"
CPUINFO = REALDATA / "cpuinfo"
MANIFEST = REALDATA / "MANIFEST.md"


def _manifest_os_table() -> dict[str, str]:
    """MANIFEST §3b: file → Spack OS computed from the os-release file alone."""
    rows: dict[str, str] = {}
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `([^`]+\.os-release)` \|.*?\| \*\*([^*]+)\*\* \|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


OS_TABLE = _manifest_os_table()
CPU_FILES = sorted(p.name for p in CPUINFO.iterdir() if not p.name.endswith(".json"))


@cache
def _families() -> dict[str, str]:
    """Target → root of its ``from`` chain in the recorded microarchitectures.json."""
    data = json.loads((CPUINFO / "microarchitectures.json").read_text(encoding="utf-8"))
    uarchs = data["microarchitectures"]

    def root(name: str) -> str:
        parents = uarchs[name]["from"]
        return name if not parents else root(parents[0])

    return {name: root(name) for name in uarchs}


class TestOsRelease:
    def test_table_covers_every_file(self) -> None:
        files = sorted(p.name for p in OS_RELEASE.iterdir())
        assert len(files) == 52
        assert sorted(OS_TABLE) == files

    @pytest.mark.parametrize("name", sorted(OS_TABLE))
    def test_spack_os_name(self, name: str) -> None:
        text = (OS_RELEASE / name).read_text(encoding="utf-8")
        assert os_from_os_release(text) == OS_TABLE[name]

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('ID="Some Distro"\nVERSION_ID="3.1"\n', "some_distro3"),
            ("ID=my-linux\nVERSION_ID=2-beta\n", "my_linux2_beta"),
            ("ID=pop-ubuntu\nVERSION_ID=22.04.1\n", "pop_ubuntu22.04"),
            ("ID=oracle\nPRETTY_NAME='Oracle Linux 7.5'\n", "oracle7"),
            ('ID="opensuse-tumbleweed"\nVERSION_ID="20240101"\n', "opensusetumbleweed20240101"),
            ("", ""),
        ],
    )
    def test_rule_edges(self, text: str, expected: str) -> None:
        assert os_from_os_release(text) == expected

    def test_tumbleweed_uses_glibc(self) -> None:
        text = 'ID="opensuse-tumbleweed"\nVERSION_ID="20240101"\n'
        assert os_from_os_release(text, glibc_version="2.39") == "opensusetumbleweed2.39"

    def test_parse_quotes_and_comments(self) -> None:
        fields = parse_os_release("# c\nNAME='A B'\nID=\"x\"\nBROKEN='\nEMPTY=\n")
        assert fields["NAME"] == "A B"
        assert fields["ID"] == "x"
        assert fields["EMPTY"] == ""
        assert "BROKEN" in fields


class TestCpuinfo:
    def test_every_recorded_cpu_is_listed(self) -> None:
        assert len(CPU_FILES) == 42

    @pytest.mark.parametrize("name", CPU_FILES)
    def test_detects_expected_target(self, name: str) -> None:
        expected = name.rsplit("-", maxsplit=1)[-1]
        family = _families()[expected]
        text = (CPUINFO / name).read_text(encoding="utf-8")
        assert detect_target(text, family) == expected

    def test_first_block_only(self) -> None:
        text = (CPUINFO / "linux-rhel7-haswell").read_text(encoding="utf-8")
        second = "\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\nflags\t: fpu\n"
        facts = parse_cpuinfo(text + second, "x86_64")
        assert facts.vendor == "GenuineIntel"
        assert "sse3" in facts.features  # implied by ssse3

    @pytest.mark.parametrize(
        ("vendor", "expected"), [("GenuineIntel", "nehalem"), ("VCPU", "x86_64_v2")]
    )
    def test_few_flags_give_an_old_target(self, vendor: str, expected: str) -> None:
        text = f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t: fpu mmx sse sse2 ssse3 "
        text += "sse4_1 sse4_2 popcnt cx16 lahf_lm\n"
        assert detect_target(text, "x86_64") == expected

    def test_unknown_aarch64_core_is_plain_aarch64(self) -> None:
        text = "processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x99\nCPU part\t: 0x001\n"
        assert detect_target(text, "aarch64") == "aarch64"

    def test_unknown_family(self) -> None:
        assert detect_target("processor : 0\n", "sparc64") == "sparc64"

    def test_riscv_without_uarch_or_model(self) -> None:
        assert detect_target("processor\t: 0\nisa\t: rv64imafdc\n", "riscv64") == "riscv64"


class TestTargets:
    def test_valid(self) -> None:
        assert validate_target("zen4") == "zen4"

    def test_unknown_lists_near_names(self) -> None:
        with pytest.raises(UsageError, match=r"unknown target 'zen9'.*did you mean.*zen"):
            validate_target("zen9")


class TestLibc:
    @pytest.mark.parametrize(
        ("text", "name", "version"),
        [
            ("glibc@2.39", "glibc", "2.39"),
            ("glibc 2.35", "glibc", "2.35"),
            ("musl@1.2.4", "musl", "1.2.4"),
        ],
    )
    def test_parse(self, text: str, name: str, version: str) -> None:
        assert parse_libc(text) == Libc(name=name, version=version)

    @pytest.mark.parametrize("bad", ["glibc", "2.39", "@2", ""])
    def test_parse_bad(self, bad: str) -> None:
        with pytest.raises(UsageError, match="invalid libc"):
            parse_libc(bad)


class TestDetectHost:
    def test_from_texts_without_probing(self) -> None:
        host = detect_host(
            cpuinfo=(CPUINFO / "linux-ubuntu22.04-neoverse_v2").read_text(encoding="utf-8"),
            os_release=(OS_RELEASE / "ubuntu24.os-release").read_text(encoding="utf-8"),
            family="aarch64",
            platform="linux",
            probe=False,
        )
        assert host == HostProfile(platform="linux", os="ubuntu24.04", target="neoverse_v2")
        assert host.to_dict() == {
            "platform": "linux",
            "os": "ubuntu24.04",
            "target": "neoverse_v2",
            "libc": None,
        }

    def test_probe_gives_a_known_target(self) -> None:
        host = detect_host()
        assert validate_target(host.target) == host.target
        assert host.platform in ("linux", "darwin")


def _args(**kw: str | None) -> argparse.Namespace:
    base: dict[str, str | None] = {"platform": None, "host_os": None, "target": None, "libc": None}
    base.update(kw)
    return argparse.Namespace(**base)


class TestHostFromArgs:
    def test_flags_win_over_env_and_config(self, tmp_path: Path) -> None:
        cfg = tmp_path / "c.yaml"
        cfg.write_text("platform: darwin\nos: rhel8\ntarget: zen2\nlibc: glibc@2.28\n")
        env = {"CACHECLIENT_CONFIG": str(cfg), "CACHECLIENT_OS": "debian12"}
        host = host_from_args(_args(target="zen4"), environ=env)
        assert host == HostProfile(
            platform="darwin", os="debian12", target="zen4", libc=Libc(name="glibc", version="2.28")
        )

    def test_env_over_config(self, tmp_path: Path) -> None:
        cfg = tmp_path / "c.yaml"
        cfg.write_text("target: zen2\n")
        env = {"CACHECLIENT_CONFIG": str(cfg), "CACHECLIENT_TARGET": "haswell"}
        assert host_from_args(_args(), environ=env).target == "haswell"

    def test_named_os_implies_its_libc(self) -> None:
        host = host_from_args(_args(platform="linux", host_os="ubuntu22.04", target="x86_64"))
        assert host.libc == Libc(name="glibc", version="2.35")

    def test_unknown_target_flag(self) -> None:
        with pytest.raises(UsageError, match="did you mean"):
            host_from_args(_args(target="haswel"))

    def test_bad_libc_env_names_the_variable(self) -> None:
        with pytest.raises(UsageError, match="CACHECLIENT_LIBC"):
            host_from_args(_args(), environ={"CACHECLIENT_LIBC": "nope"})

    def test_bad_config_is_reported(self, tmp_path: Path) -> None:
        cfg = tmp_path / "c.yaml"
        cfg.write_text("target: zen2\ncolour: red\nspeed: 3\n")
        with pytest.raises(ConfigError, match="unknown keys colour, speed"):
            host_from_args(_args(), environ={"CACHECLIENT_CONFIG": str(cfg)})


class TestConfig:
    def test_full(self) -> None:
        cfg = parse_config(
            "platform: linux\nos: ubuntu24.04\ntarget: zen4\nlibc: glibc@2.39\nos_compat: libc\n"
            "mirrors: [https://a, /b]\nstore: /s\nmirror_base: https://m\njobs: 4\n",
            "c.yaml",
        )
        assert cfg == Config(
            source="c.yaml",
            platform="linux",
            os="ubuntu24.04",
            target="zen4",
            libc="glibc@2.39",
            os_compat="libc",
            mirrors=("https://a", "/b"),
            store="/s",
            mirror_base="https://m",
            jobs=4,
        )

    def test_empty_and_missing(self, tmp_path: Path) -> None:
        assert parse_config("", "c.yaml") == Config(source="c.yaml")
        assert load_config(tmp_path / "absent.yaml") == Config()

    def test_single_mirror_string(self) -> None:
        assert parse_config("mirrors: /m\n", "c").mirrors == ("/m",)

    def test_every_problem_at_once(self) -> None:
        with pytest.raises(ConfigError) as info:
            parse_config(
                "colour: red\nos: 12\njobs: 0\nos_compat: fuzzy\nmirrors: {a: 1}\n", "c.yaml"
            )
        assert info.value.problems == (
            "unknown key colour (known: jobs, libc, mirror_base, mirrors, os, os_compat, "
            "platform, spack_mirrors, store, target)",
            "os: must be a string",
            "os_compat: must be 'exact' or 'libc', not 'fuzzy'",
            "mirrors.a: must be a URL or a mapping with fetch/url",
            "jobs: must be a positive integer",
        )
        assert str(info.value).startswith("c.yaml: 5 problems: unknown key colour")
        assert info.value.exit_code == 2

    @pytest.mark.parametrize(
        ("text", "problem"),
        [("a: [\n", "line 2: not valid YAML"), ("- a\n- b\n", "top level must be a mapping")],
    )
    def test_malformed(self, text: str, problem: str) -> None:
        with pytest.raises(ConfigError, match=problem):
            parse_config(text, "c.yaml")

    def test_location(self, tmp_path: Path) -> None:
        assert config_path({"CACHECLIENT_CONFIG": "/x/y.yaml"}) == Path("/x/y.yaml")
        assert config_path({}).name == "config.yaml"
        assert "cacheclient" in str(config_path({}))

    def test_unreadable(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read"):
            load_config(tmp_path)
