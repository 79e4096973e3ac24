"""Throwaway OpenPGP signing keys for tests, each in its own isolated GNUPGHOME.

A key is made in a fraction of a second (ed25519 by default, no passphrase); ``clearsign`` signs
text the way Spack signs spec manifests (clear-signed, SHA-512). The user's own keyring is never
touched: every gpg call passes ``--homedir``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["GPG", "GpgError", "GpgKey", "gpg_run"]

GPG = shutil.which("gpg") or "/usr/bin/gpg"
_BATCH = ["--batch", "--yes", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]


class GpgError(RuntimeError):
    """gpg is missing or failed; the message carries its stderr."""


def gpg_run(home: Path, *args: str, stdin: str | bytes | None = None) -> bytes:
    """Run gpg with ``--homedir home`` and return stdout; raise GpgError with stderr on failure."""
    if not Path(GPG).exists():
        raise GpgError("gpg not found: install Debian's gnupg (.ci/run installs it)")
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [GPG, "--homedir", str(home), *_BATCH, *args],
        input=data,
        capture_output=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise GpgError(f"gpg {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


class GpgKey:
    """A fresh signing key in a private GNUPGHOME (short path under /tmp: agent sockets need it).

    ``algo`` is anything ``gpg --quick-gen-key`` accepts (``ed25519``, ``rsa2048``, ``default``);
    ``expire`` is ``never`` or a period such as ``1d``.
    """

    def __init__(
        self,
        uid: str = "cacheclient test <test@cacheclient.invalid>",
        *,
        algo: str = "ed25519",
        expire: str = "never",
        faked_system_time: str | None = None,
    ) -> None:
        self.uid = uid
        self.home = Path(tempfile.mkdtemp(prefix="gpg-", dir="/tmp"))
        self.home.chmod(0o700)
        extra = [f"--faked-system-time={faked_system_time}"] if faked_system_time else []
        gpg_run(self.home, *extra, "--quick-gen-key", uid, algo, "sign", expire)
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> str:
        out = gpg_run(self.home, "--with-colons", "--fingerprint", "--list-secret-keys")
        for line in out.decode().splitlines():
            fields = line.split(":")
            if fields[0] == "fpr":
                return fields[9]
        raise GpgError(f"no fingerprint listed for the key in {self.home}")

    def clearsign(
        self, text: str, *, digest: str = "SHA512", faked_system_time: str | None = None
    ) -> str:
        """``text`` clear-signed by this key (dash-escaping done by gpg).

        ``faked_system_time`` (e.g. ``20200101T000000``) signs as of that moment: the way to get
        a signature from a key that has expired since.
        """
        extra = [f"--faked-system-time={faked_system_time}"] if faked_system_time else []
        out = gpg_run(
            self.home,
            *extra,
            "--local-user",
            self.fingerprint,
            "--digest-algo",
            digest,
            "--clearsign",
            stdin=text,
        )
        return out.decode()

    def sign_detached(self, data: bytes) -> bytes:
        """An ASCII-armoured detached signature over ``data``."""
        return gpg_run(
            self.home, "--local-user", self.fingerprint, "--armor", "--detach-sign", stdin=data
        )

    def public_key(self) -> str:
        """The ASCII-armoured public key."""
        return gpg_run(self.home, "--armor", "--export", self.fingerprint).decode()

    def export_public(self, path: Path) -> Path:
        """Write the armoured public key to ``path`` and return it."""
        path.write_text(self.public_key())
        return path

    def revoke(self) -> None:
        """Revoke the key with the revocation certificate gpg made when it generated it."""
        cert = (self.home / "openpgp-revocs.d" / f"{self.fingerprint}.rev").read_text()
        armor = cert.replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----BEGIN PGP PUBLIC KEY BLOCK-----"
        )
        gpg_run(self.home, "--import", stdin=armor)

    def verify(self, signed: str) -> bool:
        """Whether this key's keyring accepts a clear-signed text (for the tests of this helper)."""
        try:
            gpg_run(self.home, "--verify", stdin=signed)
        except GpgError:
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
                capture_output=True,
                timeout=30,
                check=False,
            )
        shutil.rmtree(self.home, ignore_errors=True)
