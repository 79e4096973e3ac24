"""OpenPGP trust: a keyring of trusted signers, isolated from the user's own GnuPG home.

Implementation choice: the Debian ``gnupg`` binaries, ``gpgv`` to verify and ``gpg`` to read
and export key files. Reasons:

* ``gpgv`` is the tool built for exactly this job (apt uses it the same way): it checks a
  signature against the keyrings named on its command line and nothing else: no trust database,
  no agent, no ``~/.gnupg``. Every key in our keyring is trusted; no other key is.
* ``gpgv --output -`` prints the signed text it verified, and ``--status-fd`` gives machine-
  readable results (``VALIDSIG <fingerprint>``, ``EXPKEYSIG``, ``REVKEYSIG``, ``NO_PUBKEY``),
  so the bytes we parse are the bytes that were verified (FORMATS §10 pitfall 11) and we learn
  the signer's fingerprint without parsing prose.
* Spack itself signs and verifies with GnuPG, so the fixtures and real caches are produced by
  the same implementation; ``gnupg`` is a standard package on every distribution (installed
  with ``apt-get install gnupg``) and needs no compiled Python extension, unlike pysequoia.

On disk, a trust directory holds ``keys/<FPR>.gpg``, one binary key per trusted primary key,
and ``trusted.gpg``, their concatenation (the keyring handed to ``gpgv``, rewritten atomically).
There are two: the user's (:func:`user_trust_dir`, in the config directory, so clearing caches
never drops trust) and the store's own (``<store>/.cacheclient/trust/``, which travels with a
CI cache). A signature by a key in either is accepted (:meth:`TrustStore.for_store`). Keys
downloaded from mirrors wait in the store's ``fetched/<FPR>.gpg`` and are *not* trusted until
``cacheclient keys trust <FPR or key ID>`` copies one into a ``keys/``. Keys published in a
mirror are never trusted by being there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from cacheclient import safefs
from cacheclient.errors import (
    MetadataError,
    StoreError,
    UsageError,
    VerificationError,
    printable,
)

__all__ = [
    "KeyInfo",
    "TrustStore",
    "fetch_mirror_keys",
    "gpg_available",
    "user_trust_dir",
]


def __dir__() -> list[str]:
    return __all__


_FPR_RE = re.compile(r"^[0-9A-F]{40}$|^[0-9A-F]{64}$")
_KEY_ID_RE = re.compile(r"^[0-9A-F]{8}$|^[0-9A-F]{16}$|^[0-9A-F]{40}$|^[0-9A-F]{64}$")


def user_trust_dir() -> Path:
    """The user's own trusted keys: ``<user config dir>/cacheclient/trust`` (platformdirs)."""
    return Path(platformdirs.user_config_dir("cacheclient")) / "trust"


_TIMEOUT = 60


def gpg_available() -> bool:
    """Whether both ``gpg`` and ``gpgv`` are on ``PATH``."""
    return shutil.which("gpg") is not None and shutil.which("gpgv") is not None


@dataclass(frozen=True, kw_only=True, slots=True)
class KeyInfo:
    """One OpenPGP primary key: fingerprint, user ids, creation/expiry (epoch), validity."""

    fingerprint: str
    user_ids: tuple[str, ...]
    created: int | None = None
    expires: int | None = None
    revoked: bool = False
    expired: bool = False

    @property
    def key_id(self) -> str:
        return self.fingerprint[-16:]

    def to_dict(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint,
            "key_id": self.key_id,
            "user_ids": list(self.user_ids),
            "created": self.created,
            "expires": self.expires,
            "revoked": self.revoked,
            "expired": self.expired,
        }


def _run(args: Sequence[str], *, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            list(args), input=data, capture_output=True, timeout=_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise VerificationError(
            f"{args[0]} not found: install GnuPG (e.g. apt-get install gnupg)"
        ) from None
    except subprocess.TimeoutExpired:
        raise VerificationError(f"{args[0]} timed out after {_TIMEOUT}s") from None


@contextlib.contextmanager
def _scratch_home(parent: Path) -> Iterator[Path]:
    """A throw-away GNUPGHOME (never the user's), removed afterwards."""
    parent.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="gnupg-", dir=parent))
    try:
        os.chmod(home, 0o700)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _gpg(home: Path, *args: str) -> list[str]:
    return ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--no-autostart", *args]


def _parse_colons(text: str) -> list[KeyInfo]:
    """Primary keys from ``gpg --with-colons --fixed-list-mode`` output."""
    keys: list[KeyInfo] = []
    for block in re.split(r"^(?=pub:)", text, flags=re.MULTILINE):
        lines = [line.split(":") for line in block.splitlines()]
        if not lines or lines[0][0] != "pub":
            continue
        pub = lines[0] + [""] * 10
        fpr = next((f[9] for f in lines[1:] if f[0] == "fpr" and len(f) > 9), "")
        if not fpr:
            continue
        uids = tuple(_unescape(f[9]) for f in lines if f[0] == "uid" and len(f) > 9)
        keys.append(
            KeyInfo(
                fingerprint=fpr,
                user_ids=uids,
                created=int(pub[5]) if pub[5].isdigit() else None,
                expires=int(pub[6]) if pub[6].isdigit() else None,
                revoked="r" in pub[1],
                expired="e" in pub[1],
            )
        )
    return keys


def _read_key_file(path: Path) -> bytes:
    """A key file of the trust directory, never through a planted symlink or FIFO."""
    try:
        fd = safefs.open_leaf(path)
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"{path}: cannot read key: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(16 << 20)


def _unescape(value: str) -> str:
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


class TrustStore:
    """The trusted signing keys of one trust directory (e.g. ``<store>/.cacheclient/trust``).

    *also_trusted*: other trust directories whose keys are accepted too when verifying (read
    only). *fetched_dir*: where keys fetched from mirrors wait (default: ``directory/fetched``).
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        also_trusted: Sequence[Path | str] = (),
        fetched_dir: Path | str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.also_trusted = tuple(Path(d) for d in also_trusted)
        self._fetched = Path(fetched_dir) if fetched_dir is not None else None

    @classmethod
    def for_store(cls, store_trust_dir: Path | str) -> TrustStore:
        """A store's keyring plus the user's (:func:`user_trust_dir`): what installs trust."""
        return cls(store_trust_dir, also_trusted=[user_trust_dir()])

    @property
    def keyring(self) -> Path:
        return self.directory / "trusted.gpg"

    @property
    def keyrings(self) -> list[Path]:
        """Every non-empty keyring whose keys are trusted (this directory's first)."""
        found = []
        for folder in (self.directory, *self.also_trusted):
            ring = folder / "trusted.gpg"
            with contextlib.suppress(OSError):
                info = os.lstat(ring)  # a planted symlink or FIFO is never a keyring
                if stat.S_ISREG(info.st_mode) and info.st_size > 0:
                    found.append(ring)
        return found

    @property
    def _keys_dir(self) -> Path:
        return self.directory / "keys"

    @property
    def _fetched_dir(self) -> Path:
        return self._fetched if self._fetched is not None else self.directory / "fetched"

    # -- reading key material --------------------------------------------------------------------
    def inspect_keys(self, data: bytes, source: str) -> list[tuple[KeyInfo, bytes]]:
        """The primary keys in *data* (armoured or binary) with each key's binary export."""
        try:
            with _scratch_home(self.directory / "tmp") as home:
                imported = _run(
                    _gpg(home, "--import", "--import-options", "import-clean"), data=data
                )
                listing = _run(_gpg(home, "--with-colons", "--fixed-list-mode", "--list-keys"))
                keys = _parse_colons(listing.stdout.decode("utf-8", "replace"))
                if not keys:
                    detail = imported.stderr.decode("utf-8", "replace").strip().splitlines()
                    reason = detail[-1] if detail else "no OpenPGP public key found"
                    raise VerificationError(f"{source}: no usable public key ({reason})")
                out: list[tuple[KeyInfo, bytes]] = []
                for key in keys:
                    exported = _run(_gpg(home, "--export", key.fingerprint))
                    if exported.returncode != 0 or not exported.stdout:
                        raise VerificationError(f"{source}: cannot export key {key.fingerprint}")
                    out.append((key, exported.stdout))
                return out
        except OSError as exc:
            raise StoreError(f"{self.directory}: cannot use trust directory: {exc}") from None

    # -- management ----------------------------------------------------------------------------
    def trusted_keys(self) -> list[KeyInfo]:
        """The trusted keys, by fingerprint."""
        return self._list_dir(self._keys_dir)

    def fetched_keys(self) -> list[KeyInfo]:
        """Keys fetched from mirrors (not trusted unless also in :meth:`list`)."""
        return self._list_dir(self._fetched_dir)

    def _list_dir(self, folder: Path) -> list[KeyInfo]:
        if not folder.is_dir():
            return []
        files = sorted(folder.glob("*.gpg"))
        if not files:
            return []
        data = b"".join(_read_key_file(path) for path in files)
        return sorted(
            (info for info, _ in self.inspect_keys(data, str(folder))),
            key=lambda k: k.fingerprint,
        )

    def is_trusted(self, fingerprint: str) -> bool:
        name = f"{fingerprint.upper()}.gpg"
        return any((d / "keys" / name).is_file() for d in (self.directory, *self.also_trusted))

    def owns(self, fingerprint: str) -> bool:
        """Whether *fingerprint* is trusted in this directory itself (not an *also* one)."""
        return (self._keys_dir / f"{fingerprint.upper()}.gpg").is_file()

    def _fetched_file(self, key_id: str) -> Path:
        """The fetched key whose fingerprint is *key_id* or ends with it (a long or short key
        ID, as gpg accepts); :class:`UsageError` when none or several match."""
        names = sorted(self._fetched_dir.glob("*.gpg")) if self._fetched_dir.is_dir() else []
        found = [p for p in names if p.stem.upper().endswith(key_id)]
        if not found:
            raise UsageError(
                f"key {key_id} is not known: run 'cacheclient keys fetch MIRROR' first "
                "or pass the key file"
            )
        if len(found) > 1:
            listed = ", ".join(p.stem for p in found)
            raise UsageError(f"key ID {key_id} is ambiguous ({listed}): give the fingerprint")
        return found[0]

    def public_key(self, fingerprint: str) -> bytes | None:
        """The public key (binary OpenPGP) of a trusted key; ``None`` when it is not trusted."""
        if not _FPR_RE.match(fingerprint.upper()):
            return None
        name = f"{fingerprint.upper()}.gpg"
        for directory in (self.directory, *self.also_trusted):
            try:
                return (directory / "keys" / name).read_bytes()
            except OSError:
                continue
        return None

    def trust(self, file_or_fingerprint: str) -> list[KeyInfo]:
        """Trust the keys in a key file, or a key fetched earlier with :meth:`remember`, named
        by its fingerprint or an unambiguous long (16) or short (8 hex digits) key ID."""
        candidate = file_or_fingerprint.strip().upper().replace(" ", "")
        if candidate.startswith("0X"):
            candidate = candidate[2:]
        path = Path(file_or_fingerprint)
        if _KEY_ID_RE.match(candidate) and not path.exists():
            fetched = self._fetched_file(candidate)
            data, source = fetched.read_bytes(), str(fetched)
        else:
            try:
                data, source = path.read_bytes(), str(path)
            except OSError as exc:
                raise UsageError(f"{path}: cannot read key file: {exc.strerror or exc}") from None
        try:
            keys = self.inspect_keys(data, source)
        except VerificationError as exc:
            raise UsageError(str(exc)) from None
        for info, blob in keys:
            self._write(self._keys_dir / f"{info.fingerprint}.gpg", blob)
        self._rebuild_keyring()
        return [info for info, _ in keys]

    def untrust(self, fingerprint: str) -> KeyInfo:
        """Stop trusting a key (full fingerprint, or an unambiguous suffix such as a key id)."""
        wanted = fingerprint.strip().upper().replace(" ", "").removeprefix("0X")
        matches = (
            [k for k in self.trusted_keys() if k.fingerprint.endswith(wanted)] if wanted else []
        )
        if not matches:
            raise UsageError(f"key {fingerprint} is not trusted")
        if len(matches) > 1:
            raise UsageError(f"key {fingerprint} is ambiguous: give the full fingerprint")
        info = matches[0]
        try:
            (self._keys_dir / f"{info.fingerprint}.gpg").unlink()
        except OSError as exc:
            raise StoreError(f"{self._keys_dir}: cannot remove key: {exc.strerror}") from None
        self._rebuild_keyring()
        return info

    def remember(self, data: bytes, source: str) -> list[KeyInfo]:
        """Keep keys fetched from a mirror so ``trust FPR`` can use them; does NOT trust them."""
        keys = self.inspect_keys(data, source)
        for info, blob in keys:
            self._write(self._fetched_dir / f"{info.fingerprint}.gpg", blob)
        return [info for info, _ in keys]

    def _write(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise StoreError(f"{path}: cannot write: {exc.strerror or exc}") from None

    def _rebuild_keyring(self) -> None:
        files = sorted(self._keys_dir.glob("*.gpg")) if self._keys_dir.is_dir() else []
        self._write(self.keyring, b"".join(_read_key_file(p) for p in files))

    # -- verification --------------------------------------------------------------------------
    def verify_clearsigned(self, text: str | bytes, source: str = "") -> tuple[bytes, str]:
        """Verify a clearsigned document with the trusted keys only.

        Returns ``(payload, signer_fingerprint)`` where *payload* is the signed text as
        ``gpgv`` output it. Raises :class:`VerificationError` naming *source* and the key id
        when the signer is unknown or untrusted, the signature is bad, or the key expired or
        was revoked.
        """
        data = text.encode("utf-8") if isinstance(text, str) else text
        where = source or "signed document"
        if b"-----BEGIN PGP SIGNED MESSAGE-----" not in data[:4096]:
            raise VerificationError(
                f"{where}: not signed (no clearsign header)", url=source or None
            )
        keyrings = self.keyrings
        if not keyrings:
            keyid = self._signature_key_id(data)
            raise VerificationError(
                f"{where}: signed by key {keyid or '?'}, which is not trusted "
                "(no trusted keys: see 'cacheclient keys trust')",
                url=source or None,
                key_id=keyid or None,
            )
        rings = [arg for ring in keyrings for arg in ("--keyring", str(ring))]
        result = _run(
            [
                "gpgv",
                "--homedir",
                str(keyrings[0].parent),  # exists (this directory may not, for user keys)
                *rings,
                "--status-fd",
                "2",
                "--output",
                "-",
                "-",
            ],
            data=data,
        )
        status = [
            line[len("[GNUPG:] ") :].split()
            for line in result.stderr.decode("utf-8", "replace").splitlines()
            if line.startswith("[GNUPG:] ")
        ]
        signer = self._judge(status, result.returncode, where, source)
        if b"-----BEGIN PGP SIGNED MESSAGE-----" in result.stdout:
            # What was verified is the outer text: a clear-signed block inside it is not
            # unwrapped (its own signature was never checked).
            raise VerificationError(
                f"{where}: the signed text itself contains a clear-signed block; refusing it "
                "(only the outer signature was verified)",
                url=source or None,
            )
        return result.stdout, signer

    @staticmethod
    def _judge(status: list[list[str]], returncode: int, where: str, source: str) -> str:
        url = source or None
        words = {entry[0]: entry[1:] for entry in status if entry}
        keyid = ""
        for kind in ("ERRSIG", "BADSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG", "GOODSIG"):
            if words.get(kind):
                keyid = words[kind][0]
                break
        if "NO_PUBKEY" in words or "ERRSIG" in words:
            keyid = (words.get("NO_PUBKEY") or [keyid])[0]
            raise VerificationError(
                f"{where}: signed by key {keyid or '?'}, which is not trusted "
                "(see 'cacheclient keys trust')",
                url=url,
                key_id=keyid or None,
            )
        if "BADSIG" in words:
            raise VerificationError(f"{where}: BAD signature from key {keyid}", url=url)
        if "REVKEYSIG" in words:
            raise VerificationError(f"{where}: signing key {keyid} has been revoked", url=url)
        if "EXPKEYSIG" in words:
            raise VerificationError(f"{where}: signing key {keyid} has expired", url=url)
        if "EXPSIG" in words:
            raise VerificationError(f"{where}: signature by key {keyid} has expired", url=url)
        valid = words.get("VALIDSIG")
        if returncode != 0 or "GOODSIG" not in words or not valid:
            raise VerificationError(
                f"{where}: signature could not be verified (gpgv exit {returncode})", url=url
            )
        # VALIDSIG <sig-fpr> ... <primary-fpr> (the last field, GnuPG >= 2.0).
        signer: str = valid[-1] if len(valid) >= 10 else valid[0]
        return signer

    def _signature_key_id(self, data: bytes) -> str:
        """The issuer key id of a clearsigned document, for error messages (best effort)."""
        try:
            with _scratch_home(self.directory / "tmp") as home:
                empty = home / "empty.gpg"
                empty.write_bytes(b"")
                result = _run(
                    [
                        "gpgv",
                        "--homedir",
                        str(home),
                        "--keyring",
                        str(empty),
                        "--status-fd",
                        "2",
                        "-",
                    ],
                    data=data,
                )
        except OSError:
            return ""
        for line in result.stderr.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if (
                line.startswith("[GNUPG:] ")
                and len(parts) > 2
                and parts[1]
                in (
                    "NO_PUBKEY",
                    "ERRSIG",
                )
            ):
                return parts[2]
        return ""


_KEYS_V3 = "v3/manifests/key/keys.manifest.json"
_KEYS_V2 = "build_cache/_pgp/index.json"


def _key_index(data: bytes, source: str) -> list[str]:
    try:
        obj = json.loads(data)
        keys = obj["keys"]
    except (ValueError, KeyError, TypeError):
        raise MetadataError(source, "keys", 'expected {"keys": {"<FPR>": {}}}') from None
    if not isinstance(keys, dict):
        raise MetadataError(source, "keys", "expected an object keyed by fingerprint")
    names = [str(k) for k in keys]
    for name in names:  # they become paths: never "../", NUL or anything but a fingerprint
        if not _FPR_RE.match(name.upper()):
            shown = printable(name)[:80]
            raise MetadataError(source, "keys", f"{shown!r} is not a key fingerprint")
    return names


def _v3_blob(
    read: Callable[[str], bytes | None], mirror: str, manifest_rel: str, prefix: str
) -> bytes | None:
    from cacheclient.metadata.manifest import parse_manifest  # noqa: PLC0415

    raw = read(manifest_rel)
    if raw is None:
        return None
    where = f"{mirror.rstrip('/')}/{manifest_rel}"
    blob = parse_manifest(raw, where).find(prefix)
    if blob is None:
        raise MetadataError(where, "data", f"no {prefix}* record")
    data = read(blob.path)
    url = f"{mirror.rstrip('/')}/{blob.path}"
    if data is None:
        raise MetadataError(url, "", "blob listed in the key manifest does not exist")
    actual = hashlib.sha256(data).hexdigest()
    if actual != blob.checksum:
        raise VerificationError(
            f"{url}: sha256 {actual} does not match the manifest's {blob.checksum}",
            url=url,
            mirror=mirror,
            expected=blob.checksum,
            actual=actual,
        )
    return data


def fetch_mirror_keys(
    mirror: str, trust: TrustStore, read: Callable[[str], bytes | None] | None = None
) -> list[KeyInfo]:
    """Download the public keys a mirror publishes (v3 key manifests, else v2 ``_pgp``) and
    keep them as *fetched*: they are shown, NOT trusted (``keys trust FPR`` does that).

    :raises MetadataError: the mirror publishes no keys, or its key index is malformed.
    """
    if mirror.startswith(("oci://", "oci+http://")):
        raise MetadataError(
            mirror,
            "",
            "an OCI registry publishes no keys: Spack does not sign OCI build caches (read "
            "them with --allow-unsigned or `signed: false`; locks pin their digests)",
        )
    if read is None:
        from cacheclient.transport import reader_for  # noqa: PLC0415

        read = reader_for(mirror)
    found: list[KeyInfo] = []
    index = _v3_blob(read, mirror, _KEYS_V3, "application/vnd.spack.keyindex.")
    if index is not None:
        for fpr in _key_index(index, f"{mirror.rstrip('/')}/{_KEYS_V3}"):
            rel = f"v3/manifests/key/{fpr}.key.manifest.json"
            data = _v3_blob(read, mirror, rel, "application/pgp-keys")
            if data is not None:
                found.extend(trust.remember(data, f"{mirror.rstrip('/')}/{rel}"))
        return found
    raw = read(_KEYS_V2)
    if raw is None:
        raise MetadataError(
            mirror, "", f"the mirror publishes no keys (neither {_KEYS_V3} nor {_KEYS_V2})"
        )
    for fpr in _key_index(raw, f"{mirror.rstrip('/')}/{_KEYS_V2}"):
        rel = f"build_cache/_pgp/{fpr}.pub"
        data = read(rel)
        if data is not None:
            found.extend(trust.remember(data, f"{mirror.rstrip('/')}/{rel}"))
    return found
