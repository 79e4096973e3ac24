"""Registry authentication against the real docker-registry: htpasswd Basic auth and token auth
(a token server in the tests issues JWTs the registry verifies with a certificate made here)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from cacheclient.transport.oci_auth import TokenCache, find_credentials, parse_challenge
from registryserver import MakeRegistry, TokenServer, make_certificate, write_htpasswd

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
ZLIB = "ybmvd3uhpbh7s2m74uv3dvqdkpg5obwd"
SECRET = "correct horse battery staple"  # noqa: S105 - a throwaway test password


def _fetch(url: str, store: Path, *extra: str) -> list[str]:
    return [
        "fetch",
        f"/{ZLIB}",
        "--mirror",
        url,
        *HOST,
        "--allow-unsigned",
        "--store",
        str(store),
        *extra,
    ]


class TestBasic:
    def test_401_names_the_registry_then_env_and_docker_config_work(
        self,
        registry_factory: MakeRegistry,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        htpasswd = write_htpasswd(tmp_path / "htpasswd", {"ci": SECRET})
        server = registry_factory(spack_cache=True, htpasswd=htpasswd)
        url = server.url()
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.delenv("DOCKER_CONFIG", raising=False)
        assert main(_fetch(url, tmp_path / "a")) == 5
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"oci+http://{server.host}" in err
        assert "CACHECLIENT_OCI_USERNAME" in err
        assert "docker login" in err
        assert SECRET not in err

        monkeypatch.setenv("CACHECLIENT_OCI_USERNAME", "ci")
        monkeypatch.setenv("CACHECLIENT_OCI_PASSWORD", "wrong")
        assert main(_fetch(url, tmp_path / "b")) == 5
        err = capsys.readouterr().err
        assert "CACHECLIENT_OCI_USERNAME were not accepted" in err
        assert "wrong" not in err

        monkeypatch.setenv("CACHECLIENT_OCI_PASSWORD", SECRET)
        assert main(_fetch(url, tmp_path / "c")) == 0
        monkeypatch.delenv("CACHECLIENT_OCI_USERNAME")
        monkeypatch.delenv("CACHECLIENT_OCI_PASSWORD")

        config = tmp_path / "home" / ".docker" / "config.json"
        config.parent.mkdir(parents=True)
        auth = base64.b64encode(f"ci:{SECRET}".encode()).decode()
        config.write_text(json.dumps({"auths": {server.host: {"auth": auth}}}))
        capsys.readouterr()
        assert main(_fetch(url, tmp_path / "d")) == 0
        out = capsys.readouterr()
        assert SECRET not in out.out + out.err
        assert not any(
            SECRET in p.read_text(errors="replace")
            for p in (tmp_path / "d").rglob("*")
            if p.is_file()
        )


class TestToken:
    def test_anonymous_pull_and_credentialed_push_with_token_reuse(
        self,
        registry_factory: MakeRegistry,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        cert, key = make_certificate(tmp_path / "certs", name="token")
        tokens = TokenServer(
            cert=cert, key=key, users={"ci": SECRET}, anonymous_pull=True, field_name="access_token"
        )
        try:
            server = registry_factory(spack_cache=True, token=tokens, token_cert=cert)
            url = server.url()
            monkeypatch.setenv("HOME", str(tmp_path / "home"))
            store = tmp_path / "s"
            assert main(_fetch(url, store)) == 0
            pulls = [r for r in tokens.requests if "pull" in r["scope"]]
            assert len(pulls) == 1  # one token for index, manifest and blobs
            assert pulls[0]["user"] == ""
            assert pulls[0]["service"] == "test-registry"

            target = server.url("fleet/cache")
            assert main(["push", target, "--all", "--store", str(store)]) == 5
            err = capsys.readouterr().err
            assert "CACHECLIENT_OCI_USERNAME" in err

            monkeypatch.setenv("CACHECLIENT_OCI_USERNAME", "ci")
            monkeypatch.setenv("CACHECLIENT_OCI_PASSWORD", SECRET)
            before = len(tokens.requests)
            assert main(["push", target, "--all", "--store", str(store), "--json"]) == 0
            report = json.loads(capsys.readouterr().out)
            assert report["index_builds"] == 1
            pushes = [r for r in tokens.requests[before:] if "push" in r["scope"]]
            assert pushes
            assert {r["user"] for r in pushes} == {"ci"}
            assert len(pushes) <= 2  # reused until expiry, not one per request
            assert main(_fetch(target, tmp_path / "fresh")) == 0
        finally:
            tokens.stop()


def test_challenge_parsing_and_docker_config(tmp_path: Path) -> None:
    challenge = parse_challenge(
        'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull"'
    )
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.params["service"] == "ghcr.io"
    assert parse_challenge("Negotiate abc") is None
    basic = parse_challenge('Basic realm="x"')
    assert basic is not None
    assert basic.scheme == "basic"
    folder = tmp_path / "docker"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"auths": {"https://ghcr.io": {"username": "u", "password": SECRET}}})
    )
    found = find_credentials("ghcr.io", {"DOCKER_CONFIG": str(folder)})
    assert found is not None
    assert (found.username, found.password) == ("u", SECRET)
    assert SECRET not in repr(found)
    assert find_credentials("other.io", {"DOCKER_CONFIG": str(folder)}) is None
    env = {"CACHECLIENT_OCI_USERNAME": "e", "CACHECLIENT_OCI_PASSWORD": "f"}
    found = find_credentials("ghcr.io", env)
    assert found is not None
    assert found.username == "e"


def test_tokens_are_reused_until_they_expire() -> None:
    now = [1000.0]
    cache = TokenCache(clock=lambda: now[0])
    key = ("https://auth/token", "reg", "repository:a:pull")
    cache.put(key, "t1", 60)
    now[0] += 50
    assert cache.get(key) == "t1"
    now[0] += 6  # within the safety margin before expiry
    assert cache.get(key) is None
    cache.put(key, "t2", 300)
    cache.drop(key)
    assert cache.get(key) is None
