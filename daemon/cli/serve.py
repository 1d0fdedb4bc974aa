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
    ray = p.add_argument_group("scaled out on Ray Serve (docs/fleet.md; needs hfd[ray])")
    ray.add_argument(
        "--ray", metavar="ADDRESS", help="deploy the configured models on this Ray cluster instead"
    )
    ray.add_argument("--ray-replicas", metavar="MIN:MAX", default="1:2", help="replicas per model")
    ray.add_argument("--ray-target-ongoing", type=float, default=8.0, help="ongoing requests per replica")
    ray.add_argument("--ray-replica-cpus", type=float, help="CPUs per replica (default: its thread budget)")
    ray.add_argument("--ray-max-per-node", type=int, help="most replicas of a model on one node (1: spread)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from hfd.daemon.app import serve
    from hfd.daemon.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    # `kill -USR1 <pid>` prints every thread's stack to stderr (the journal): how to see
    # where a stuck daemon is stuck without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        if getattr(args, "ray", None):
            return _serve_ray(args, settings)
        return serve(settings)
    except OSError as exc:
        print(f"hfd: cannot start: {exc}", file=sys.stderr)
        return 1
    except (SettingsError, HfdError) as exc:  # a configuration the daemon refuses to serve
        print(f"hfd: cannot start: {exc}", file=sys.stderr)
        return 2


def _serve_ray(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from hfd.daemon.fleet.plan import FleetOptions
        from hfd.daemon.fleet.ray_app import deploy
    except ImportError as exc:
        print(f"hfd: --ray needs Ray Serve (pip install 'hfd[ray]'): {exc}", file=sys.stderr)
        return 2
    low, _, high = str(args.ray_replicas).partition(":")
    try:
        options = FleetOptions(
            min_replicas=int(low),
            max_replicas=int(high or low),
            target_ongoing_requests=args.ray_target_ongoing,
            replica_cpus=args.ray_replica_cpus,
            max_replicas_per_node=args.ray_max_per_node,
        )
    except ValueError as exc:
        print(f"hfd: --ray-replicas: {exc}", file=sys.stderr)
        return 2
    return deploy(settings, args.ray, options)
