"""``cacheclient host``: ``--short`` like ``spack arch``; ``--cpuinfo`` reads the family from the
file, on every recorded archspec host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from paths import REALDATA

CPUINFO = REALDATA / "cpuinfo"
HOSTS = sorted(p for p in CPUINFO.iterdir() if p.suffix != ".json")
# archspec's own dumps of POWER9/POWER10 are tested as big-endian; the file cannot say.
BIG_ENDIAN_POWER = {"linux-rhel8-power9", "linux-unknown-power10"}

Capture = pytest.CaptureFixture[str]


def _family(target: str) -> str:
    table = json.loads((CPUINFO / "microarchitectures.json").read_text())["microarchitectures"]
    while table[target]["from"]:
        target = table[target]["from"][0]
    return target


def test_short_is_platform_os_target(capsys: Capture) -> None:
    args = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
    assert main(["host", "--short", *args]) == 0
    assert capsys.readouterr().out == "linux-debian12-x86_64_v4\n"


@pytest.mark.parametrize("dump", HOSTS, ids=[p.name for p in HOSTS])
def test_cpuinfo_family_comes_from_the_file(dump: Path, capsys: Capture) -> None:
    expected = dump.name.rsplit("-", 1)[-1]
    args = ["host", "--cpuinfo", str(dump), "--os", "debian12", "--json"]
    if dump.name in BIG_ENDIAN_POWER:
        args += ["--family", _family(expected)]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["target"] == expected
    assert _family(expected) in doc["compatible_targets"]


def test_power9_without_a_family_is_little_endian(capsys: Capture) -> None:
    assert main(["host", "--short", "--cpuinfo", str(CPUINFO / "linux-rhel8-power9")]) == 0
    assert capsys.readouterr().out.strip().endswith("-power9le")


def test_the_library_reads_the_family_too() -> None:
    from cacheclient.resolution.host import detect_host

    text = (CPUINFO / "linux-ubuntu22.04-neoverse_v2").read_text()
    assert detect_host(cpuinfo=text, probe=False).target == "neoverse_v2"


def test_a_file_that_names_no_family_is_a_usage_error(tmp_path: Path, capsys: Capture) -> None:
    dump = tmp_path / "cpuinfo"
    dump.write_text("processor : 0\nbogomips : 100\n")
    assert main(["host", "--cpuinfo", str(dump)]) == 2
    assert "pass --family" in capsys.readouterr().err
    assert main(["host", "--cpuinfo", str(dump), "--family", "x86_64", "--short"]) == 0
    assert capsys.readouterr().out.strip().endswith("-x86_64")
