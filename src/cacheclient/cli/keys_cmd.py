"""``cacheclient keys``: manage the trusted signing keys.

``list`` shows trusted keys, each with the keyring it lives in (and keys fetched but not
trusted), ``trust FILE_OR_KEY`` trusts the keys in a file or a key fetched earlier (by
fingerprint or unambiguous long/short key ID), ``untrust FPR`` removes one, and ``fetch MIRROR``
downloads the keys a mirror publishes and shows their fingerprints *without* trusting them:
being published next to the data they sign proves nothing.

Two keyrings are trusted: the user's, in the config directory (clearing caches never drops
it), and the store's own, which travels with a CI cache. ``trust`` writes to the store's when a
store is named (``--store``, ``CACHECLIENT_STORE`` or the config file), else to the user's;
``--keyring user|store`` chooses.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from cacheclient.cli._common import add_store_option, print_json, require_existing_store
from cacheclient.errors import UsageError
from cacheclient.settings import store_from_option
from cacheclient.trust import KeyInfo, TrustStore, fetch_mirror_keys, user_trust_dir

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "keys",
        help="list, trust, untrust or fetch the keys that sign builds",
        description="Manage the trusted OpenPGP keys (separate from ~/.gnupg): the user's "
        "keyring in the config directory and the store's own. Only signatures by trusted keys "
        "are accepted.",
    )
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION")
    actions.required = True

    def common(p: argparse.ArgumentParser) -> None:
        add_store_option(p)
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        p.set_defaults(func=run)

    common(actions.add_parser("list", help="show trusted keys (and fetched, untrusted ones)"))
    trust = actions.add_parser(
        "trust", help="trust the keys in FILE, or a fetched key by fingerprint or key ID"
    )
    trust.add_argument("key", metavar="FILE_OR_KEY")
    _keyring_option(trust)
    common(trust)
    untrust = actions.add_parser("untrust", help="stop trusting a key")
    untrust.add_argument("fingerprint", metavar="FPR")
    _keyring_option(untrust)
    common(untrust)
    fetch = actions.add_parser(
        "fetch", help="download the keys a mirror publishes (shown, NOT trusted)"
    )
    fetch.add_argument("mirror", metavar="MIRROR")
    fetch.add_argument(
        "--offline", action="store_true", help="only a local mirror (path or file://) is read"
    )
    common(fetch)
    parser.set_defaults(func=run)


def _keyring_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keyring",
        choices=("user", "store"),
        default=None,
        help="the user's keyring (config directory) or the store's (for CI caches); default: "
        "the store's when a store is named, else the user's",
    )


def _line(key: KeyInfo) -> str:
    flags = [f for f, on in (("revoked", key.revoked), ("expired", key.expired)) if on]
    extra = f" [{', '.join(flags)}]" if flags else ""
    uid = key.user_ids[0] if key.user_ids else "(no user id)"
    return f"{key.fingerprint}  {uid}{extra}"


def _store_named(args: argparse.Namespace) -> bool:
    from cacheclient.settings import load_config  # noqa: PLC0415

    return bool(args.store or os.environ.get("CACHECLIENT_STORE") or load_config().store)


def run(args: argparse.Namespace) -> int:
    store = store_from_option(getattr(args, "store", None))
    keyrings = {
        "user": TrustStore(user_trust_dir(), fetched_dir=store.trust_dir / "fetched"),
        "store": TrustStore(store.trust_dir, also_trusted=[user_trust_dir()]),
    }
    chosen = getattr(args, "keyring", None) or ("store" if _store_named(args) else "user")
    action = getattr(args, "keys_action", None)
    if action == "list":
        if _store_named(args):  # a named store that was never made is an error, not "no keys"
            require_existing_store(store.root)
        trusted = [(name, ring, k) for name, ring in keyrings.items() for k in ring.trusted_keys()]
        fetched = [
            k
            for k in keyrings["store"].fetched_keys()
            if not keyrings["store"].is_trusted(k.fingerprint)
        ]
        if args.json:
            print_json(
                {
                    "trusted": [
                        {**k.to_dict(), "keyring": name, "path": str(ring.keyring)}
                        for name, ring, k in trusted
                    ],
                    "fetched_untrusted": [k.to_dict() for k in fetched],
                }
            )
            return 0
        print(f"trusted keys ({len(trusted)}):")
        for name, ring, key in trusted:
            print(f"  {_line(key)}  ({name} keyring {ring.keyring})")
        if not trusted:
            print(
                f"  none (user keyring {keyrings['user'].keyring}, store keyring "
                f"{keyrings['store'].keyring})"
            )
        if fetched:
            print(f"fetched, NOT trusted ({len(fetched)}):")
            for key in fetched:
                print(f"  {_line(key)}")
        return 0
    if action == "trust":
        ring = keyrings[chosen]
        keys = ring.trust(args.key)
        if args.json:
            print_json(
                {
                    "trusted": [
                        {**k.to_dict(), "keyring": chosen, "path": str(ring.keyring)} for k in keys
                    ]
                }
            )
        else:
            for key in keys:
                print(f"trusted {_line(key)}  ({chosen} keyring {ring.keyring})")
        return 0
    if action == "untrust":
        names = [args.keyring] if args.keyring else list(keyrings)
        removed: list[tuple[str, KeyInfo]] = []
        for name in names:
            with contextlib.suppress(UsageError):  # not in this keyring
                removed.append((name, keyrings[name].untrust(args.fingerprint)))
        if not removed:
            where = f"in the {args.keyring} keyring" if args.keyring else "in any keyring"
            raise UsageError(f"key {args.fingerprint} is not trusted {where}")
        if args.json:
            print_json({"untrusted": removed[0][1].to_dict(), "keyrings": [n for n, _ in removed]})
        else:
            for name, key in removed:
                print(f"untrusted {_line(key)}  ({name} keyring)")
        return 0
    if action == "fetch":
        from cacheclient.settings import normalise_mirror  # noqa: PLC0415

        trust = keyrings["store"]
        if args.offline and args.mirror.startswith(("http://", "https://")):
            raise UsageError(
                f"--offline: fetching keys from {args.mirror} needs the network "
                "(keys fetched earlier: cacheclient keys list)"
            )
        keys = fetch_mirror_keys(normalise_mirror(args.mirror), trust)
        if args.json:
            print_json({"fetched": [k.to_dict() for k in keys], "trusted": False})
            return 0
        for key in keys:
            state = "already trusted" if trust.is_trusted(key.fingerprint) else "NOT trusted"
            print(f"fetched {_line(key)}  ({state})")
        print(
            "Keys published by a mirror are not trusted automatically. Check a fingerprint "
            "with its owner, then run: cacheclient keys trust <FINGERPRINT or KEY ID>"
        )
        return 0
    raise UsageError("keys: choose one of list, trust, untrust, fetch")
