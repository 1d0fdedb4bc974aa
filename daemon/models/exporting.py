"""Building a model's engine export ahead of its load: at ``hfd pull`` (``export_on_pull``) and
at the start of every load, so the engine itself only reads a ready export.

Only the engines that derive an artifact from a snapshot have anything to build: OpenVINO (IR,
for text generation, vision chat and embeddings) and ONNX Runtime (an ONNX graph, for
embeddings). Others (torch, the fake engine) and the remaining tasks (heads, speech, image-text,
whose exports are built by their own loaders) have nothing to build here. The export cache
(``hfd.backends.exports``) makes a second call for the same snapshot a lookup; the model
manager's ``exports_built`` counter counts the exports built, so a test can tell a load that
exported from one that found its export ready.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

from hfd.backends import families, preload
from hfd.backends.base import LoadOptions
from hfd.daemon.tasks import registry as task_registry

if TYPE_CHECKING:
    from hfd.daemon.models.loading import Loader
    from hfd.daemon.settings import ModelSpec, Settings
    from hfd.daemon.store import ModelStore

log = logging.getLogger(__name__)

# Engine loads that reach transformers only through the helpers that wait for the background
# import themselves (``hfd.backends.preload``): a warm start on them does not wait for it.
_WAITS_INSIDE: Final = frozenset({("openvino", "embed"), ("openvino", "generate"), ("onnxruntime", "embed"),
                                  ("fake", "embed"), ("fake", "generate")})  # fmt: skip


def exports(engine: str, task: str) -> bool:
    """Whether :func:`export` builds something for this engine and task."""
    return (engine == "openvino" and task in ("embed", "generate", "vision-chat")) or (
        engine == "onnxruntime" and task == "embed"
    )


def export(engine: str, opts: LoadOptions, counters: dict[str, int]) -> bool:
    """Build (or find) the export ``engine`` loads ``opts`` from (see :func:`exports`); True
    when this call built it. Blocks (the exporters wait for the background import themselves)."""
    if engine == "openvino":
        from hfd.backends.openvino_backend import ov_device
        from hfd.backends.openvino_export import prepare_ir, resolve_weight_format

        if opts.task == "vision-chat":
            from hfd.backends import vlm_openvino

            vlm_openvino.check_family(families.model_type(opts.path))  # before its export
        elif opts.task == "generate":
            from hfd.backends.openvino_backend import check_generator_options

            check_generator_options(opts)  # a bad option costs no export
        _, built = prepare_ir(opts, opts.task, resolve_weight_format(opts, ov_device(opts.device)))
    else:
        from hfd.backends.onnx_backend import prepare_onnx

        _, built = prepare_onnx(opts)
    if built:
        counters["exports_built"] = counters.get("exports_built", 0) + 1
    return built


async def export_first(loader: Loader, spec: ModelSpec, path: Path) -> dict[str, Any] | None:
    """Build the export of the engine a load of ``spec`` would try first here, as a pull does;
    ``{"engine", "device", "built"}``, or None when that engine has nothing to export."""
    from hfd.daemon.models.loading import asked_options, untried  # loading imports this module

    name = spec.public_name
    task = task_registry.task_for(spec.task, path, name)
    family = families.model_type(path)
    asked = asked_options(spec, path)
    for engine, device, _ in loader.candidates(task, spec):
        if untried(engine, task, family, asked) is not None:
            continue  # the load would skip it untried (its family, or an option it does not read)
        if not exports(engine, task):
            return None
        opts = loader.options(spec, path, task, device, engine)
        loader.phases.enter(name, "exporting", task=task, engine=engine, device=device)
        try:
            built = await anyio.to_thread.run_sync(export, engine, opts, loader.counters)
        finally:
            loader.phases.done(name)
        log.info("model exported", extra={"model": name, "engine": engine, "device": device, "built": built})
        return {"engine": engine, "device": device, "built": built}
    return None


def start_importing(settings: Settings, store: ModelStore, loaded: Iterable[str]) -> None:
    """Import the engine libraries, then transformers, in a background thread once the daemon
    is ready (``hfd.backends.preload``): a warm start's first request would pay for them. When
    a configured model not yet loaded (``loaded``: the preloaded models' names) generates text
    and may run on OpenVINO (no other engine pinned), a spare engine process is started for its
    load too: an idle one costs ~90 MiB no budget counts (``openvino_process.SPARE_BYTES``)."""
    done = set(loaded)
    waiting = [spec for spec in settings.models if spec.public_name not in done]
    preload.start(
        spare_generator=lambda: any(_generates_on_openvino(settings, store, spec) for spec in waiting)
    )


def stop_importing() -> None:
    """At shutdown: close the spare engine process that no load took."""
    preload.close_spare()


def _generates_on_openvino(settings: Settings, store: ModelStore, spec: ModelSpec) -> bool:
    """Whether a load of ``spec`` may generate on OpenVINO: no other engine pinned, and its task
    (pinned, else detected from the stored snapshot; a model not stored yet counts as not)."""
    if (spec.engine or settings.engine) not in (None, "openvino"):
        return False
    if spec.task is not None:
        return spec.task == "generate"
    try:
        found = store.find(spec)
    except Exception:  # a bad reference: its load says so
        return False
    return found is not None and task_registry.guess_task(found.path) == "generate"


@contextlib.contextmanager
def imports_for(engine: str, task: str) -> Iterator[None]:
    """Around a load on ``engine``: first wait for the background import of transformers, unless
    the engine's load waits for it itself where it needs it (``_WAITS_INSIDE``); such a load
    holds that import back while it runs instead (``preload.warm_load``)."""
    if (engine, task) in _WAITS_INSIDE:
        with preload.warm_load():
            yield
        return
    preload.wait_for_transformers()
    yield
