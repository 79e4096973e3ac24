"""Tests for ``cacheclient inspect`` on real mirrors, the seed page, HTTP and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from cacheclient.cli.main import main
from cacheclient.mirrors.writer import MirrorBuild, fake_hash, write_mirror
from cacheclient.model import BuildRecord, Dependency
from conftest import ServeDir
from paths import SEED_PAGE, SPACK_V3_SIGNED, SPACK_V3_UNSIGNED, V2_MIRRORS


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["inspect", *argv, "--json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


class TestMirrors:
    def test_v3_fixture(self, capsys: pytest.CaptureFixture[str]) -> None:
        report = _json(capsys, str(SPACK_V3_SIGNED), "--check-files")
        assert report["kind"] == "mirror"
        assert report["layouts"] == [3]
        assert report["records"] == report["installable"] == 18
        assert report["packages"]["demo-zlib"]["records"] == 6
        assert report["packages"]["demo-tool"]["versions"] == ["0.9.0", "1.0.0"]
        assert report["targets"] == {"x86_64_v2": 8, "x86_64_v3": 7, "x86_64_v4": 3}
        assert report["problems"] == []

    def test_v2_fixture_file_url(self, capsys: pytest.CaptureFixture[str]) -> None:
        report = _json(capsys, (V2_MIRRORS / "signed").as_uri(), "--check-files")
        assert report["layouts"] == [2]
        assert report["records"] == 7
        assert report["installable"] == 6
        assert report["externals"] == 1
        assert report["problems"] == []

    def test_over_http(self, capsys: pytest.CaptureFixture[str], nginx_mirror: ServeDir) -> None:
        server = nginx_mirror(SPACK_V3_UNSIGNED)
        report = _json(capsys, server.url + "/")
        assert report["records"] == 18

    def test_text_output(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["inspect", str(SPACK_V3_UNSIGNED)]) == 0
        out = capsys.readouterr().out
        assert "layout: v3" in out
        assert "records: 18 (18 installable, 0 dependency-only, 0 external)" in out
        assert "demo-zlib" in out
        assert "no problems found" in out

    def test_problems_are_listed(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        lib = BuildRecord(
            name="lib", version="1", hash=fake_hash("lib"), platform="linux", os="x",
            target="x86_64",
            dependencies=(Dependency(name="gone", hash=fake_hash("gone"),
                                     deptypes=frozenset({"link"})),),
        )  # fmt: skip
        mirror = write_mirror(tmp_path / "m", [MirrorBuild(record=lib)])
        manifest = mirror.builds[lib.hash].manifest_path
        assert manifest is not None
        (mirror.root / manifest).unlink()
        report = _json(capsys, str(mirror.root), "--check-files")
        assert len(report["problems"]) == 2
        assert "is not in the index" in report["problems"][0]
        assert "missing v3/manifests/spec/lib/" in report["problems"][1]

    def test_malformed_record_is_a_problem_not_a_crash(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        mirror = tmp_path / "v2"
        shutil.copytree(V2_MIRRORS / "unsigned", mirror)
        index = mirror / "build_cache/index.json"
        doc = json.loads(index.read_text())
        doc["database"]["installs"]["rqh2vuf6fqwkmipzgi2wjx352mq7y7ez"]["spec"]["arch"] = 5
        index.write_text(json.dumps(doc))
        report = _json(capsys, str(mirror))
        assert report["records"] == 6
        assert len(report["problems"]) == 1
        assert (
            "database.installs.rqh2vuf6fqwkmipzgi2wjx352mq7y7ez.spec.arch"
            in (report["problems"][0])
        )

    def test_both_layouts(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        both = tmp_path / "both"
        shutil.copytree(SPACK_V3_UNSIGNED, both)
        shutil.copytree(V2_MIRRORS / "unsigned/build_cache", both / "build_cache")
        report = _json(capsys, str(both), "--check-files")
        assert report["layouts"] == [3, 2]
        assert report["records"] == 25
        assert report["problems"] == []


class TestPages:
    def test_seed_page(self, capsys: pytest.CaptureFixture[str]) -> None:
        report = _json(capsys, str(SEED_PAGE))
        assert report["kind"] == "page"
        assert report["records"] == 58
        assert report["stacks"]["root"] == 58
        assert report["os"] == {"ubuntu22.04": 20, "ubuntu24.04": 38}
        assert report["warnings"] == []

    def test_page_with_meta_disagreement(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        page = tmp_path / "p.md"
        page.write_text(SEED_PAGE.read_text().replace('"num_specs": 58', '"num_specs": 59'))
        report = _json(capsys, str(page))
        assert len(report["warnings"]) == 1
        assert "meta.num_specs" in report["warnings"][0]

    def test_page_over_http(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], nginx_mirror: ServeDir
    ) -> None:
        shutil.copy(SEED_PAGE, tmp_path / "specs.md")
        server = nginx_mirror(tmp_path)
        assert _json(capsys, f"{server.url}/specs.md")["records"] == 58


class TestBadInput:
    @pytest.mark.parametrize(
        ("content", "needle"),
        [
            ("no front matter\n", "no YAML front matter"),
            ('---\ntitle: "x"\nspec_details: [{"hash": "short"}]\n---\n',
             "spec_details[0].hash"),
        ],
    )  # fmt: skip
    def test_bad_page_exit_7(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needle: str
    ) -> None:
        page = tmp_path / "bad.md"
        page.write_text(content)
        assert main(["inspect", str(page)]) == 7
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0
        assert str(page) in err
        assert needle in err

    def test_not_a_mirror_exit_7(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["inspect", str(tmp_path)]) == 7
        assert "not a Spack binary mirror" in capsys.readouterr().err

    def test_missing_path_exit_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["inspect", str(tmp_path / "nope")]) == 2
        assert "no such directory" in capsys.readouterr().err

    @pytest.mark.parametrize("url", ["s3://bucket/mirror", "gs://bucket/mirror"])
    def test_unsupported_schemes(self, capsys: pytest.CaptureFixture[str], url: str) -> None:
        assert main(["inspect", url]) == 2
        assert "mirrors are not supported" in capsys.readouterr().err

    def test_non_utf8_page(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        page = tmp_path / "p.md"
        page.write_bytes(b"---\ntitle: \xff\n---\n")
        assert main(["inspect", str(page)]) == 7
        assert "not UTF-8" in capsys.readouterr().err


class TestLegacyLayout:
    def test_layout_0_mirror_is_refused_with_a_clear_reason(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from paths import REALDATA

        mirror = REALDATA / "spack-test-mirrors" / "legacy_yaml"
        assert main(["inspect", str(mirror)]) == 7
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert "layout-0 mirror (build_cache/*.spec.yaml" in err
