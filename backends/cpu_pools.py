"""The engines' CPU thread pools: the options hfd sets on them (and the defaults it keeps), and
why, for the engines' option builders and ``hfd doctor`` (one line each).

Measured with ``scripts/bench`` on the 2-core AMD EPYC (AVX2): idle, with one core held by a
CPU-bound program, and under the load of other work (load average 13-18); docs/benchmarks.md,
"Engine threads and thread pools", has the tables.

- ONNX Runtime's intra-op threads spin while they wait for work. At two threads with one core
  held by another program, spinning embedded 0.55-0.8x what one thread did (the spinning thread
  burns the core the descheduled one needs); not spinning, within about 10% of one thread.
  ``onnx_backend.session_options`` sets ``SESSION_CONFIG`` on every CPU session (encoders,
  classification heads, CLIP towers).
- OpenVINO pins its threads to cores (``ENABLE_CPU_PINNING``). Unpinned did not do better in
  the runs that matter to the defaults (idle: no better at 1 and 32 streams; load average 15:
  the same as pinned), so OpenVINO's default is kept, and shown.
- torch: OpenMP's defaults. ``OMP_WAIT_POLICY=PASSIVE`` lost the second thread's gain on the
  idle box, and a shorter spin (``GOMP_SPINCOUNT=10000``) still collapsed two threads with a core
  held; automatic threads leave torch a core instead (``hfd.daemon.models.threads``).

Nothing here imports an engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class PoolOption:
    name: str  # the engine's own name for it
    value: str
    why: str


# ONNX Runtime session config entries (SessionOptions.add_session_config_entry), CPU sessions.
SESSION_CONFIG: Final[dict[str, str]] = {"session.intra_op.allow_spinning": "0"}

_OPTIONS: Final[dict[str, tuple[PoolOption, ...]]] = {
    "onnxruntime": (
        PoolOption(
            "session.intra_op.allow_spinning",
            SESSION_CONFIG["session.intra_op.allow_spinning"],
            "idle threads sleep: spinning, 2 threads gave 0.55-0.8x of 1 with a core busy "
            "(2-core AMD EPYC, AVX2)",
        ),
    ),
    "openvino": (
        PoolOption(
            "ENABLE_CPU_PINNING",
            "YES (OpenVINO's default, kept)",
            "unpinned was no faster idle and the same under load (2-core AMD EPYC, AVX2)",
        ),
    ),
    "torch": (
        PoolOption(
            "OMP_WAIT_POLICY",
            "unset (OpenMP's default, kept)",
            "passive lost the 2nd thread's idle gain; a short spin still collapsed with a core busy "
            "(2-core AMD EPYC, AVX2)",
        ),
    ),
}


def options(engine: str) -> list[PoolOption]:
    """The pool options of ``engine`` hfd sets or deliberately keeps, with why; [] for others."""
    return list(_OPTIONS.get(engine, ()))
