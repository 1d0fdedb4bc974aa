"""Model options an engine does not read are refused, never ignored: an engine that does not read
one of a model's options is skipped untried, a load no candidate can honour fails naming the
option and its readers (before a draft model is pulled for it), and a misspelt option is refused
naming the closest known one. The manager runs on a described box (OpenVINO first, then torch)
with the fake engine standing in for the engine that serves, so no engine library is needed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from support.fake_models import fake_model

from hfd.backends import model_options, registry
from hfd.backends.base import LoadOptions, Task
from hfd.backends.hardware import CpuInfo, Device, EngineProbe, HardwareReport, MemoryInfo
from hfd.client.errors import InvalidRequest
from hfd.daemon.models.budgets import Budgets
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.models.memory import RAM
from hfd.daemon.settings import ModelSpec, load_settings, with_overrides

pytestmark = pytest.mark.anyio
DOCS = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def _box() -> HardwareReport:
    """An x86 CPU with OpenVINO, torch and ONNX Runtime: OpenVINO first for both tasks."""
    return HardwareReport(
        system="Linux",
        python="3",
        cpu=CpuInfo("AuthenticAMD", "test CPU", "x86_64", 2, 2, 2, ("avx2",)),
        memory=MemoryInfo(total_bytes=8 << 30, available_bytes=8 << 30),
        torch=EngineProbe("torch", True, "0", devices=(Device("torch", "cpu", "cpu", "CPU"),)),
        openvino=EngineProbe("openvino", True, "0", devices=(Device("openvino", "CPU", "cpu", "CPU"),)),
        onnxruntime=EngineProbe(
            "onnxruntime", True, "0", devices=(Device("onnxruntime", "cpu", "cpu", "CPU"),)
        ),
    )


class Engines:
    """An engine loader serving every engine with the fake engine; records what it was asked."""

    def __init__(self) -> None:
        self.tried: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, engine: str, task: Task, opts: LoadOptions) -> Any:
        self.tried.append((engine, dict(opts.extra)))
        fake = registry.get_backend("fake")
        plain = dataclasses.replace(opts, extra={})  # the fake engine reads none of the real options
        return fake.load_generator(plain) if task == "generate" else fake.load_encoder(plain)


class Resolver:
    """The store: every reference resolves to a fake model directory; records the references."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.refs: list[str] = []

    def __call__(self, spec: ModelSpec) -> Path:
        self.refs.append(spec.ref)
        kind = "bert" if "bert" in spec.ref else "llama"
        return fake_model(self.root, kind, name=spec.ref.replace("/", "--"))


@pytest.fixture
def make(tmp_path: Path) -> Any:
    made: list[tuple[ModelManager, Engines, Resolver]] = []

    def factory(*specs: ModelSpec) -> tuple[ModelManager, Engines, Resolver]:
        base = load_settings(
            environ={"HFD_STATE_DIR": str(tmp_path / "state"), "HFD_CACHE_DIR": str(tmp_path)}
        )
        engines, resolver = Engines(), Resolver(tmp_path / "models")
        manager = ModelManager(with_overrides(base, models=specs), resolve=resolver, budgets=Budgets({RAM: 1 << 40}),
                               load_engine=engines, detect_hardware=_box)  # fmt: skip
        made.append((manager, engines, resolver))
        return manager, engines, resolver

    yield factory


async def _refused(manager: ModelManager, name: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        await manager.load(name)
    return err.value


async def test_a_draft_model_on_torch_is_refused_and_never_pulled(make: Any) -> None:
    manager, engines, resolver = make(ModelSpec(ref="acme/chat", name="chat", engine="torch",
                                                options={"draft_model": "acme/draft"}))  # fmt: skip
    err = await _refused(manager, "chat")
    assert err.param == "options.draft_model" and err.status == 400
    assert "read by openvino" in err.message and "(torch)" in err.message
    assert err.details["options"] == {"draft_model": ["openvino"]}
    assert resolver.refs == ["acme/chat"]  # the draft was not pulled
    assert engines.tried == []


async def test_an_engine_that_does_not_read_an_option_is_skipped_untried(make: Any) -> None:
    manager, engines, resolver = make(
        ModelSpec(ref="acme/chat", name="chat", options={"prefix_cache_bytes": 1 << 20}),
        ModelSpec(ref="acme/spec", name="spec", options={"draft_model": "acme/draft", "draft_tokens": 3}),
    )
    try:
        lm = await manager.load("chat")  # OpenVINO comes first here but reads no prefix_cache_bytes
        assert [e for e, _ in engines.tried] == ["torch"]
        info = lm.info(manager.now())
        assert (info["engine"], info["preferred_engine"]) == ("torch", "openvino")
        assert "prefix_cache_bytes" in info["fallback_reason"] and "read by torch" in info["fallback_reason"]

        await manager.load("spec")  # OpenVINO reads both: the draft is pulled and handed over
        engine, extra = engines.tried[-1]
        assert engine == "openvino" and resolver.refs[-1] == "acme/draft"
        assert extra["draft_model_path"].endswith("acme--draft") and extra["draft_tokens"] == 3
    finally:
        await manager.aclose()


async def test_options_no_single_engine_reads_are_refused_naming_each(make: Any) -> None:
    manager, engines, _ = make(
        ModelSpec(ref="acme/chat", name="chat", options={"prefix_cache_bytes": 1, "split_fuse": True})
    )
    err = await _refused(manager, "chat")
    assert err.details["options"] == {"prefix_cache_bytes": ["torch"], "split_fuse": ["openvino"]}
    assert err.details["engines"] == ["openvino", "torch"] and engines.tried == []


async def test_a_misspelt_option_is_refused_naming_the_closest(make: Any) -> None:
    manager, engines, _ = make(
        ModelSpec(ref="acme/chat", name="a", options={"lookup_ngrm": 2}),
        ModelSpec(ref="acme/chat", name="b", options={"threds": 2}),
        ModelSpec(ref="acme/chat", name="c", options={"max_running": 2}),
    )
    a = await _refused(manager, "a")
    assert a.param == "options.lookup_ngrm" and "did you mean 'lookup_ngram'?" in a.message
    assert "lookup_ngram" in a.details["known"] and "openvino: dtype" in a.message
    b = await _refused(manager, "b")
    assert "did you mean 'threads', a [[models]] key?" in b.message
    c = await _refused(manager, "c")
    assert c.param == "options.max_running" and "is a [[models]] key, not a model option" in c.message
    assert engines.tried == []


async def test_the_test_engines_options_are_accepted_but_never_suggested(make: Any) -> None:
    # "step_m" is closest to the fake engine's step_ms, which no user engine reads.
    manager, _, _ = make(ModelSpec(ref="acme/chat", name="a", options={"step_m": 2}))
    err = await _refused(manager, "a")
    assert "step_ms" not in err.message and "fake:" not in err.message
    assert "step_ms" not in err.details["known"] and "lookup_ngram" in err.details["known"]
    model_options.check_names({"step_ms": 5}, "generate")  # the fake engine, pinned by tests, still reads it


async def test_an_option_of_another_task_is_refused(make: Any) -> None:
    manager, engines, resolver = make(
        ModelSpec(ref="acme/bert", name="enc", options={"draft_model": "acme/draft"}),
    )
    err = await _refused(manager, "enc")
    assert (
        err.param == "options.draft_model" and "applies to generate models, not to this embed" in err.message
    )
    assert resolver.refs == ["acme/bert"] and engines.tried == []


async def test_the_draft_directory_is_the_daemons_to_set(make: Any) -> None:
    manager, _, _ = make(
        ModelSpec(ref="acme/chat", name="a", options={"draft_model_path": "/elsewhere"}),
        ModelSpec(
            ref="acme/chat", name="b", options={"draft_model": "acme/d", "draft_model_path": "/elsewhere"}
        ),
    )
    assert (await _refused(manager, "a")).param == "options.draft_model_path"  # read by no engine
    assert (await _refused(manager, "b")).param == "options.draft_model_path"  # the manager's own


async def test_onnxruntime_honours_a_dtype_of_float32_only(make: Any) -> None:
    manager, engines, _ = make(
        ModelSpec(ref="acme/bert", name="f32", engine="onnxruntime", options={"dtype": "float32"}),
        ModelSpec(ref="acme/bert", name="f16", engine="onnxruntime", options={"dtype": "float16"}),
    )
    try:
        await manager.load("f32")
        assert [e for e, _ in engines.tried] == ["onnxruntime"]
        err = await _refused(manager, "f16")
        assert err.param == "options.dtype" and "onnxruntime with float32 or fp32 only" in err.message
    finally:
        await manager.aclose()


def test_a_test_hook_does_not_stop_an_engine_that_ignores_it() -> None:
    assert model_options.unread("torch", {"test_fault": "warmup"}) == []
    assert model_options.unread("torch", {"speculative": "prompt-lookup"}) == ["speculative"]


def test_every_option_is_documented_per_engine() -> None:
    assert model_options.markdown() in DOCS.read_text(encoding="utf-8")
    for record in registry.RECORDS:  # declared once, with the text the docs and errors show
        assert all(o.summary for o in record.options)


async def test_an_engine_a_load_would_skip_is_not_measured(make: Any, tmp_path: Path) -> None:
    from hfd.daemon.models import engine_choice

    plain = ModelSpec(ref="acme/chat", name="plain")
    kept = ModelSpec(ref="acme/chat", name="kept", options={"prefix_cache_bytes": 1 << 20})
    manager, _, _ = make(plain, kept)
    path = fake_model(tmp_path / "models", "llama", name="chat")
    both = engine_choice.plan(manager.loader, plain, path, "generate", manager.candidates("generate", plain))
    assert both is not None and both.engines == ("openvino", "torch")
    # Only torch reads prefix_cache_bytes: one engine left, nothing to choose between.
    assert (
        engine_choice.plan(manager.loader, kept, path, "generate", manager.candidates("generate", kept))
        is None
    )
