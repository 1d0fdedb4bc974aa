"""Engine libraries imported ahead of the first load, in a background thread started once the
daemon is ready, so that a restarted daemon's first request does not pay for them.

First what a warm load on the OpenVINO or ONNX Runtime engine needs: the hardware report (its
probes import openvino and onnxruntime) and openvino_genai and tokenizers, about a second; then
transformers, which takes several (it imports torch). transformers' lazy module is not safe to
import from two threads at once, so whatever imports it first waits for this import
(``wait_for_transformers``): the helpers that read a model through it (``_hf``), the exporters,
xgrammar's first grammar, and the model manager before a load on an engine that imports it
itself (torch). A warm load that never touches transformers (OpenVINO or ONNX Runtime with the
tokenizer recorded, ``tokenizer_facts``) does not wait; while one runs (``warm_load``), the
import of transformers does not start (for at most five seconds, and not once anything waits
for it), since on a small box the two would share a core and the daemon's GIL. Where OpenVINO
runs generation, a spare engine process can be started too (``openvino_process.start_spare``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

log = logging.getLogger(__name__)

_started = threading.Event()  # start was called
_transformers = threading.Event()  # and its transformers import is over
# Loads that need no transformers, running now: the import of transformers waits for them to
# end (at most _DEFER_S), since on a small box the two share a core and the daemon's GIL.
_warm_loads = 0
_wanted = False  # something waits for transformers: import it now
_quiet = threading.Condition()
_DEFER_S: Final = 5.0


def start(*, spare_generator: bool = False) -> None:
    """Start the background imports (once per process); with ``spare_generator``, and when
    OpenVINO is the engine this box runs generation on first, start a spare engine process for
    it too (``openvino_process.start_spare``)."""
    if _started.is_set():
        return
    _started.set()
    threading.Thread(target=_import, args=(spare_generator,), name="hfd-imports", daemon=True).start()


@contextmanager
def warm_load() -> Iterator[None]:
    """A load that needs no transformers runs in this block: the background import of
    transformers does not start meanwhile (for at most ``_DEFER_S``)."""
    global _warm_loads
    with _quiet:
        _warm_loads += 1
    try:
        yield
    finally:
        with _quiet:
            _warm_loads -= 1
            _quiet.notify_all()


def wait_for_transformers() -> None:
    """Block until the background import of transformers, if one was started, is over."""
    global _wanted
    if _started.is_set() and not _transformers.is_set():
        with _quiet:
            _wanted = True
            _quiet.notify_all()
        _transformers.wait()


def _import(spare_generator: bool) -> None:
    started = time.perf_counter()
    try:
        _engines(spare_generator)
        engines = time.perf_counter() - started
        with _quiet:
            _quiet.wait_for(lambda: _warm_loads == 0 or _wanted, timeout=_DEFER_S)
        _import_transformers()
        log.info("background imports done", extra={"engines_seconds": round(engines, 3),
                                                     "seconds": round(time.perf_counter() - started, 3)})  # fmt: skip
    finally:
        _transformers.set()


def _engines(spare_generator: bool) -> None:
    from hfd.backends import hardware, policy

    report = hardware.detect()  # cached: the first load's engine choice reads it
    for module in ("tokenizers", "openvino_genai"):  # not probed, but read by a warm load
        try:
            __import__(module)
        except Exception as exc:  # not installed here
            log.debug("not imported ahead of the first load", extra={"module": module, "error": str(exc)})
    if not spare_generator:
        return
    try:
        first = policy.choose_engine("generate", report)[0].engine
        if first == "openvino":
            from hfd.backends import openvino_process

            openvino_process.start_spare()
    except Exception as exc:  # no engine for generation here, or no process could start
        log.info("no spare engine process", extra={"error": str(exc)})


def _import_transformers() -> None:
    try:
        import transformers  # noqa: F401
        from transformers import AutoConfig, AutoTokenizer  # noqa: F401
    except Exception as exc:  # not installed (a box on ONNX Runtime only, the fake engine)
        log.debug("transformers not imported ahead of the first load", extra={"error": str(exc)})
