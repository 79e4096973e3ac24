"""``cacheclient keys``: manage the trusted signing keys of the store.

``list`` shows trusted keys (and keys fetched but not trusted), ``trust FILE_OR_FINGERPRINT``
trusts the keys in a file or a key fetched earlier, ``untrust FPR`` removes one, and
``fetch MIRROR`` downloads the keys a mirror publishes and shows their fingerprints *without*
trusting them: being published next to the data they sign proves nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from cacheclient.cli._common import add_store_option, print_json, require_existing_store
from cacheclient.errors import UsageError
from cacheclient.settings import store_from_option
from cacheclient.trust import KeyInfo, TrustStore, fetch_mirror_keys

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "keys",
        help="list, trust, untrust or fetch the keys that sign builds",
        description="Manage the trusted OpenPGP keys (kept in the store, separate from "
        "~/.gnupg). Only signatures by trusted keys are accepted.",
    )
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION")
    actions.required = True

    def common(p: argparse.ArgumentParser) -> None:
        add_store_option(p)
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        p.set_defaults(func=run)

    common(actions.add_parser("list", help="show trusted keys (and fetched, untrusted ones)"))
    trust = actions.add_parser("trust", help="trust the keys in FILE, or a fetched key by FPR")
    trust.add_argument("key", metavar="FILE_OR_FINGERPRINT")
    common(trust)
    untrust = actions.add_parser("untrust", help="stop trusting a key")
    untrust.add_argument("fingerprint", metavar="FPR")
    common(untrust)
    fetch = actions.add_parser(
        "fetch", help="download the keys a mirror publishes (shown, NOT trusted)"
    )
    fetch.add_argument("mirror", metavar="MIRROR")
    common(fetch)
    parser.set_defaults(func=run)


def _line(key: KeyInfo) -> str:
    flags = [f for f, on in (("revoked", key.revoked), ("expired", key.expired)) if on]
    extra = f" [{', '.join(flags)}]" if flags else ""
    uid = key.user_ids[0] if key.user_ids else "(no user id)"
    return f"{key.fingerprint}  {uid}{extra}"


def run(args: argparse.Namespace) -> int:
    store = store_from_option(getattr(args, "store", None))
    trust = TrustStore(store.trust_dir)
    action = getattr(args, "keys_action", None)
    if action == "list":
        require_existing_store(store.root)
        trusted = trust.trusted_keys()
        fetched = [k for k in trust.fetched_keys() if not trust.is_trusted(k.fingerprint)]
        if args.json:
            print_json(
                {
                    "trusted": [k.to_dict() for k in trusted],
                    "fetched_untrusted": [k.to_dict() for k in fetched],
                }
            )
            return 0
        print(f"trusted keys ({len(trusted)}) in {trust.directory}:")
        for key in trusted:
            print(f"  {_line(key)}")
        if fetched:
            print(f"fetched, NOT trusted ({len(fetched)}):")
            for key in fetched:
                print(f"  {_line(key)}")
        return 0
    if action == "trust":
        keys = trust.trust(args.key)
        if args.json:
            print_json({"trusted": [k.to_dict() for k in keys]})
        else:
            for key in keys:
                print(f"trusted {_line(key)}")
        return 0
    if action == "untrust":
        key = trust.untrust(args.fingerprint)
        if args.json:
            print_json({"untrusted": key.to_dict()})
        else:
            print(f"untrusted {_line(key)}")
        return 0
    if action == "fetch":
        from cacheclient.settings import normalise_mirror  # noqa: PLC0415

        keys = fetch_mirror_keys(normalise_mirror(args.mirror), trust)
        if args.json:
            print_json({"fetched": [k.to_dict() for k in keys], "trusted": False})
            return 0
        for key in keys:
            state = "already trusted" if trust.is_trusted(key.fingerprint) else "NOT trusted"
            print(f"fetched {_line(key)}  ({state})")
        print(
            "Keys published by a mirror are not trusted automatically. Check a fingerprint "
            "with its owner, then run: cacheclient keys trust <FINGERPRINT>"
        )
        return 0
    raise UsageError("keys: choose one of list, trust, untrust, fetch")
