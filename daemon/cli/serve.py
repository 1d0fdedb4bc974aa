"""``hfd serve``: run the daemon in the foreground."""

from __future__ import annotations

import argparse
import faulthandler
import signal
import sys
from typing import Any

from hfd.client.errors import HfdError
from hfd.daemon.settings import Settings, SettingsError


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the daemon in the foreground (both doors)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from hfd.daemon.app import serve
    from hfd.daemon.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    # `kill -USR1 <pid>` prints every thread's stack to stderr (the journal): how to see
    # where a stuck daemon is stuck without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        return serve(settings)
    except OSError as exc:
        print(f"hfd: cannot start: {exc}", file=sys.stderr)
        return 1
    except (SettingsError, HfdError) as exc:  # a configuration the daemon refuses to serve
        print(f"hfd: cannot start: {exc}", file=sys.stderr)
        return 2
