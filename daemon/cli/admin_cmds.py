"""``hfd keys create|list|revoke|curve`` and ``hfd stats``.

They work on the state directory directly (the daemon need not run, and sees changes to keys
from its next request on). For the system service run them as root or as the ``hfd`` user
with ``HFD_SYSTEM=1``, so they use /var/lib/hfd.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from hfd.client.errors import HfdError
from hfd.daemon.settings import Settings

NONE_LABEL = "(none)"


def add_parsers(sub: Any) -> None:
    from hfd.daemon.cli import STATE_SETTINGS, settings_parent

    keys = sub.add_parser("keys", help="manage API keys for the HTTP door")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    # Settings flags (--state-dir ...) go after the action: `hfd keys list --state-dir X`.
    parent = [settings_parent(STATE_SETTINGS)]

    create = ksub.add_parser("create", help="create a key and print it (shown once)", parents=parent)
    create.add_argument(
        "name", nargs="?", metavar="NAME", help="a name for the key (unique among active keys)"
    )
    # The older spelling, kept working.
    create.add_argument("--name", dest="name_flag", metavar="NAME", help=argparse.SUPPRESS)
    create.add_argument(
        "--models", dest="key_models", help="comma-separated models the key may use (default: all)"
    )
    create.add_argument(
        "--scopes", default="inference", help="comma-separated: inference, models, admin (default: inference)"
    )
    create.add_argument("--rpm", type=int, default=0, help="requests per minute (0: unlimited)")
    create.add_argument("--tpm", type=int, default=0, help="tokens per minute (0: unlimited)")
    create.add_argument("--json", action="store_true", help="print the key and its settings as JSON")
    create.set_defaults(handler=_create)

    lst = ksub.add_parser("list", help="list keys (never the keys themselves)", parents=parent)
    lst.add_argument("--all", action="store_true", help="include revoked keys")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=_list)

    revoke = ksub.add_parser("revoke", help="revoke a key by name or id (effective at once)", parents=parent)
    revoke.add_argument("key", metavar="NAME|ID")
    revoke.set_defaults(handler=_revoke)

    curve = ksub.add_parser(
        "curve", help="make a CURVE key pair for the IPC door's TCP endpoint", parents=parent
    )
    curve.add_argument(
        "--out", type=Path, required=True, help="directory to write NAME.key and NAME.key_secret to"
    )
    curve.add_argument("--name", default="server", help="file name stem (default: server)")
    curve.set_defaults(handler=_curve)

    stats = sub.add_parser("stats", help="summarise the usage log")
    stats.add_argument("--by", default="model", choices=["model", "key", "day", "route", "status"])
    stats.add_argument("--since", help="only requests since: 7d, 12h, 30m, or an ISO date/time")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(handler=_stats)


def _fail(exc: HfdError) -> int:
    print(f"hfd: {exc.message}", file=sys.stderr)
    return 1


def _store(settings: Settings) -> Any:
    from hfd.daemon.access.keys import KeyStore

    return KeyStore(settings.state_dir)


def _create(args: argparse.Namespace, settings: Settings) -> int:
    name = args.name or args.name_flag
    if not name or (args.name and args.name_flag and args.name != args.name_flag):
        print("hfd keys create: give the key one NAME, e.g. `hfd keys create laptop`", file=sys.stderr)
        return 2
    models = args.key_models.split(",") if args.key_models else None
    try:
        key, secret = _store(settings).create(
            name, scopes=args.scopes, models=models, rpm=args.rpm, tpm=args.tpm
        )
    except HfdError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps({"key": secret, **key.as_dict()}))
        return 0
    print(secret)
    print(
        f"created key {key.id} ({key.name}): scopes {','.join(sorted(key.scopes))}; "
        f"models {'all' if key.models is None else ','.join(sorted(key.models))}; "
        f"{key.rpm or 'unlimited'} requests/min, {key.tpm or 'unlimited'} tokens/min. "
        "The key is shown only now.",
        file=sys.stderr,
    )
    return 0


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _list(args: argparse.Namespace, settings: Settings) -> int:
    try:
        keys = _store(settings).list_keys(include_revoked=args.all)
    except HfdError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps([k.as_dict() for k in keys]))
        return 0
    rows = [["ID", "NAME", "SCOPES", "MODELS", "RPM", "TPM", "CREATED", "REVOKED"]]
    for k in keys:
        rows.append(
            [
                k.id,
                k.name,
                ",".join(sorted(k.scopes)),
                "all" if k.models is None else ",".join(sorted(k.models)),
                str(k.rpm or "-"),
                str(k.tpm or "-"),
                _when(k.created_at),
                _when(k.revoked_at),
            ]
        )
    _table(rows)
    return 0


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    try:
        key = _store(settings).revoke(args.key)
    except HfdError as exc:
        return _fail(exc)
    print(f"revoked key {key.id} ({key.name})")
    return 0


def _curve(args: argparse.Namespace, settings: Settings) -> int:
    from hfd.daemon.access.zap import create_keypair

    try:
        public, secret = create_keypair(args.out, args.name)
    except (HfdError, OSError) as exc:
        print(f"hfd: {exc}", file=sys.stderr)
        return 1
    print(f"public key (give to the other side): {public}")
    print(f"secret key (keep, mode 0600):       {secret}")
    return 0


def _stats(args: argparse.Namespace, settings: Settings) -> int:
    from hfd.daemon.access.usage import parse_since, summarize

    try:
        rows = summarize(settings.state_dir, by=args.by, since=parse_since(args.since))
    except HfdError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no usage recorded" + (f" since {args.since}" if args.since else ""))
        return 0
    table = [[args.by.upper(), "REQUESTS", "ERRORS", "TOKENS IN", "TOKENS OUT", "MEAN MS", "P95 MS"]]
    for r in rows:
        table.append(
            [
                _group_label(r["group"]),
                str(r["requests"]),
                str(r["errors"]),
                str(r["prompt_tokens"]),
                str(r["completion_tokens"]),
                f"{r['mean_ms']:.1f}",
                f"{r['p95_ms']:.1f}",
            ]
        )
    total = [
        "TOTAL",
        str(sum(r["requests"] for r in rows)),
        str(sum(r["errors"] for r in rows)),
        str(sum(r["prompt_tokens"] for r in rows)),
        str(sum(r["completion_tokens"] for r in rows)),
        "",
        "",
    ]
    table.append(total)
    _table(table)
    return 0


def _group_label(group: object) -> str:
    """A row's group as shown: requests that named no model (or no key, route...) are
    ``(none)``, not a blank cell."""
    text = "" if group is None else str(group).strip()
    return text or NONE_LABEL


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
