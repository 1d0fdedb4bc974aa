"""``hfd pull | ls | show | rm | verify | publish | export | import``: the model store from the command line.

These commands work on the store directly (they do not need a running daemon): the files are
written under a per-repository lock that the daemon honours too, and the catalog is opened
briefly for each operation (see ``hfd.daemon.store.catalog``), so they are safe to run while
the daemon serves.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hfd._units import format_bytes
from hfd.client.errors import HfdError
from hfd.daemon.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def add_parsers(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "pull", help="fetch a model into the store (IPFS first when a CID is known, then the Hub)"
    )
    p.add_argument("ref", help="org/name[@revision], ipfs://<cid> or an alias")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept pickled weights (*.bin, *.pt, *.pkl) for this model",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_guard(cmd_pull))

    p = subparsers.add_parser("ls", help="list the models in the store (and in the Hugging Face cache)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_guard(cmd_ls))

    p = subparsers.add_parser("show", help="a stored model's files, sizes, digests, CID, task and source")
    p.add_argument("ref")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_guard(cmd_show))

    p = subparsers.add_parser("rm", help="remove models from the store and free the blobs nothing else uses")
    p.add_argument("refs", nargs="+", metavar="ref", help="org/name (every snapshot) or org/name@revision")
    p.set_defaults(handler=_guard(cmd_rm))

    p = subparsers.add_parser(
        "verify",
        help="re-hash stored models against the catalog; quarantine bad files so 'hfd pull' fetches them again",
    )
    p.add_argument("ref", nargs="?", help="one model (default: the whole store)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_guard(cmd_verify))

    p = subparsers.add_parser("publish", help="add a model to the IPFS node, pinned, and print its CID")
    p.add_argument("ref", help="a stored model or a local model directory")
    p.add_argument("--repo", help="repository id to record for a local directory (default: local/<dir name>)")
    p.set_defaults(handler=_guard(cmd_publish))

    p = subparsers.add_parser("export", help="write a model to an offline bundle (a tar with its manifest)")
    p.add_argument("ref")
    p.add_argument("-o", "--output", required=True, type=Path, help="bundle file to write")
    p.add_argument("--repo", help="repository id to record for a local directory")
    p.set_defaults(handler=_guard(cmd_export))

    p = subparsers.add_parser("import", help="verify a bundle and add its model to the store")
    p.add_argument("bundle", type=Path)
    p.add_argument("--allow-pickle", action="store_true", help="accept pickled weights in the bundle")
    p.set_defaults(handler=_guard(cmd_import))


def _guard(handler: Handler) -> Handler:
    """Print an hfd error as one line (with its stable code) instead of a traceback."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        from hfd.daemon.logs import setup_logging

        setup_logging(settings.log_level, settings.log_format)
        try:
            return handler(args, settings)
        except HfdError as exc:
            print(f"hfd: {exc.message} [{exc.code}]", file=sys.stderr)
            return 1

    run.__name__ = handler.__name__
    return run


def _store(settings: Settings) -> Any:
    from hfd.daemon.store.model_store import ModelStore

    return ModelStore(settings)


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    from hfd.daemon.store.pull import LogProgress, TerminalProgress

    progress = TerminalProgress(sys.stderr) if sys.stderr.isatty() else LogProgress()
    snap = _store(settings).pull(
        args.ref, allow_pickle=True if args.allow_pickle else None, progress=progress
    )
    if args.json:
        print(json.dumps(snap.to_dict()))
    else:
        print(snap.path)
    return 0


def cmd_ls(args: argparse.Namespace, settings: Settings) -> int:
    infos = _store(settings).list_snapshots()
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=1))
        return 0
    rows = [("MODEL", "COMMIT", "SIZE", "SOURCE", "TASK", "LAST USED")]
    for i in infos:
        name = i.snapshot.repo + (f"@{','.join(i.refs)}" if i.refs else "")
        used = i.last_used.strftime("%Y-%m-%d %H:%M") if i.last_used else "-"
        rows.append(
            (
                name,
                (i.snapshot.commit or "")[:12],
                format_bytes(i.size),
                i.snapshot.source,
                i.task or "-",
                used,
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    info = _store(settings).show(args.ref)
    if args.json:
        print(json.dumps(info.to_dict(), indent=1))
        return 0
    snap = info.snapshot
    for key, value in (
        ("model", snap.repo),
        ("revision", snap.revision or "-"),
        ("commit", snap.commit or "-"),
        ("refs", ", ".join(info.refs) or "-"),
        ("path", str(snap.path)),
        ("source", snap.source),
        ("task", info.task or "-"),
        ("cid", info.cid or "-"),
        ("size", f"{format_bytes(info.size)} in {info.file_count} files"),
        ("pulled", info.pulled_at.isoformat(" ", "seconds") if info.pulled_at else "-"),
        ("last used", info.last_used.isoformat(" ", "seconds") if info.last_used else "-"),
    ):
        print(f"{key:>10}  {value}")
    if info.missing:
        print(f"{'missing':>10}  {', '.join(info.missing)} (quarantined or deleted; `hfd pull` fetches them)")
    print()
    for f in info.files:
        print(f"  {f.path}  {format_bytes(f.size)}  sha256:{f.sha256}" + (f"  {f.cid}" if f.cid else ""))
    return 0


def cmd_rm(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    status = 0
    for ref in args.refs:
        try:
            removed = store.remove(ref)
        except HfdError as exc:
            print(f"hfd: {exc.message} [{exc.code}]", file=sys.stderr)
            status = 1
            continue
        print(
            f"removed {removed.repo} ({len(removed.commits)} snapshot(s)), freed {format_bytes(removed.freed)}"
        )
    return status


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 1 when any blob was bad (changed, truncated or missing)."""
    report = _store(settings).verify(args.ref)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return 0 if report.ok else 1
    for bad in report.bad:
        action = "quarantined" if bad.quarantined else "not there"
        print(f"BAD  {bad.repo}  {', '.join(bad.files)}  {bad.problem}  ({action})")
    if report.ok:
        print(f"ok: {report.blobs} blob(s), {format_bytes(report.hashed_bytes)} verified")
        return 0
    repos = sorted({b.repo for b in report.bad})
    print(
        f"{len(report.bad)} of {report.blobs} blob(s) bad; `hfd pull MODEL` fetches them again, for: "
        + ", ".join(repos),
        file=sys.stderr,
    )
    return 1


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    result = _store(settings).publish(args.ref, repo=args.repo)
    print(
        f"published {result.repo}@{result.commit[:12]} ({result.files} files, {format_bytes(result.size)})",
        file=sys.stderr,
    )
    print(result.cid)
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    manifest, size = _store(settings).export(args.ref, args.output, repo=args.repo)
    print(f"exported {manifest.repo}@{manifest.commit[:12]} to {args.output} ({format_bytes(size)})")
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from hfd.daemon.store.pull import LogProgress, TerminalProgress

    progress = TerminalProgress(sys.stderr) if sys.stderr.isatty() else LogProgress()
    snap = _store(settings).import_bundle(args.bundle, allow_pickle=args.allow_pickle, progress=progress)
    print(snap.path)
    return 0
