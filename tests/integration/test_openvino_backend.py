"""The OpenVINO engine against the torch engine on the same tiny models: real exports, real
ContinuousBatchingPipeline, real compiled encoders."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.models import EMBED_TEXTS, cosines, minilm, tiny_bert, tiny_llama

from hfd.backends import hardware
from hfd.backends.base import GenerationModel, LoadOptions, SamplingParams, StepOutput

pytest.importorskip("openvino_genai", reason="the openvino extra is not installed")
pytest.importorskip("optimum.intel", reason="optimum-intel is not installed (needed to export)")

from hfd.backends import load_progress, openvino_export, openvino_kv, openvino_process
from hfd.backends.exports import MARKER, ExportCache
from hfd.backends.openvino_backend import OpenVINOBackend, OVGenerator
from hfd.backends.torch_backend import TorchBackend
from hfd.client.errors import ContextLengthExceeded, InvalidRequest, ModelUnavailable

TEXTS = list(EMBED_TEXTS)
PROMPTS = ["hello world the quick", "Paris is the capital of", "Write a short poem about the ocean."]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ov-cache")


def _opts(path: Path, task: str, cache_dir: Path, **kw: object) -> LoadOptions:
    base: dict = {"weight_format": "fp32", "dtype": "float32", "threads": 1, "max_running": 8}  # type: ignore[type-arg]
    base.update(kw)
    return LoadOptions(path=path, task=task, cache_dir=cache_dir, **base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ov_llama(cache_dir: Path) -> Iterator[OVGenerator]:
    gen = OpenVINOBackend().load_generator(_opts(tiny_llama(), "generate", cache_dir))
    yield gen
    gen.close()


def run_all(gen: GenerationModel, prompts: list[list[int]], params: SamplingParams) -> dict[int, list[int]]:
    for i, ids in enumerate(prompts):
        gen.add(i, ids, params)
    out: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    for _ in range(10_000):
        if not gen.has_work():
            break
        for step in gen.step():
            out[step.seq_id].extend(step.token_ids)
    assert not gen.has_work()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model", [tiny_bert, minilm], ids=["tiny-bert", "minilm"])
def test_embeddings_match_torch(model: object, cache_dir: Path) -> None:
    path = model()  # type: ignore[operator]
    ov = OpenVINOBackend().load_encoder(_opts(path, "embed", cache_dir))
    pt = TorchBackend().load_encoder(LoadOptions(path=path, task="embed", threads=1))
    assert (ov.dimensions, ov.max_length) == (pt.dimensions, pt.max_length)
    assert ov.tokenize(TEXTS).ids == pt.tokenize(TEXTS).ids
    a, b = ov.embed(ov.tokenize(TEXTS)), pt.embed(pt.tokenize(TEXTS))
    assert a.shape == (len(TEXTS), pt.dimensions) and a.dtype == np.float32
    assert cosines(a, b).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-4)  # the config says normalise
    # One text alone embeds as it does inside a padded batch.
    alone = ov.embed(ov.tokenize(TEXTS[2:3]))
    assert cosines(alone, a[2:3])[0] >= 0.9999
    ov.close()


@pytest.mark.slow
def test_minilm_embeddings_are_semantic(cache_dir: Path) -> None:
    ov = OpenVINOBackend().load_encoder(_opts(minilm(), "embed", cache_dir))
    e = ov.embed(
        ov.tokenize(
            [
                "A cat sleeps on the sofa.",
                "A kitten is napping on the couch.",
                "Stock markets fell sharply today.",
            ]
        )
    )
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


@pytest.mark.slow
def test_greedy_generation_matches_torch(ov_llama: OVGenerator) -> None:
    pt = TorchBackend().load_generator(
        LoadOptions(path=tiny_llama(), task="generate", threads=1, max_running=8)
    )
    prompts = [pt.encode_prompt(p) for p in PROMPTS]
    prompts.append(pt.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}]))
    assert [ov_llama.encode_prompt(p) for p in PROMPTS] == prompts[:3]
    assert (
        ov_llama.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
        == prompts[3]
    )
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    ov_out = run_all(ov_llama, prompts, params)
    pt_out = run_all(pt, prompts, params)
    for i in range(len(prompts)):
        assert len(ov_out[i]) == 16
        assert ov_out[i] == pt_out[i], f"prompt {i}"
    pt.close()


@pytest.mark.slow
def test_finish_reasons_cancel_and_seeded_sampling(ov_llama: OVGenerator) -> None:
    ids = ov_llama.encode_prompt("the quick brown fox")
    # The engine process steps ahead of step() (a tiny model takes ~1 ms a step), so sequence 2
    # is cancelled at the first step() and given far more tokens than can be made meanwhile.
    ov_llama.add(1, ids, SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))
    ov_llama.add(2, ids, SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True))
    finished: dict[int, str] = {}
    tokens: dict[int, list[int]] = {1: [], 2: []}
    steps = 0
    while ov_llama.has_work():
        for out in ov_llama.step():
            tokens[out.seq_id].extend(out.token_ids)
            if out.finished:
                finished[out.seq_id] = out.finished
        steps += 1
        if steps == 1:
            ov_llama.cancel(2)
    assert finished == {1: "length"}  # a cancelled sequence produces no more output
    assert len(tokens[1]) == 5 and len(tokens[2]) < 200
    ov_llama.cancel(12345)  # unknown ids are ignored

    sampled = SamplingParams(max_tokens=12, temperature=0.9, top_p=0.95, seed=7, ignore_eos=True)
    a = run_all(ov_llama, [ids, ids], sampled)
    assert a[0] == a[1]  # same seed, same tokens
    b = run_all(ov_llama, [ids], SamplingParams(max_tokens=12, temperature=0.9, seed=8, ignore_eos=True))
    assert b[0] != a[0]


@pytest.mark.slow
def test_bad_requests_get_clear_errors(ov_llama: OVGenerator) -> None:
    with pytest.raises(ContextLengthExceeded) as err:
        ov_llama.add(1, [5] * ov_llama.context_length, SamplingParams(max_tokens=4))
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(InvalidRequest):
        ov_llama.add(1, [10**7], SamplingParams(max_tokens=4))
    with pytest.raises(InvalidRequest):
        ov_llama.add(1, [], SamplingParams(max_tokens=4))
    assert not ov_llama.has_work()


@pytest.mark.slow
def test_kv_cache_is_sized_to_the_reservation(ov_llama: OVGenerator, cache_dir: Path) -> None:
    # Default: max_running (8) sequences of the full context (256 tokens) at 256 bytes a token.
    assert ov_llama.kv_cache_bytes == 8 * 256 * openvino_kv.kv_token_bytes(
        json.loads((tiny_llama() / "config.json").read_text())
    )
    reserved = 4 << 20
    gen = OpenVINOBackend().load_generator(
        _opts(tiny_llama(), "generate", cache_dir, extra={"kv_cache_bytes": reserved})
    )
    assert reserved // 2 <= gen.kv_cache_bytes <= reserved
    assert gen.memory_bytes() >= gen.kv_cache_bytes
    out = run_all(
        gen, [gen.encode_prompt("hello")] * 3, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    )
    assert [len(v) for v in out.values()] == [4, 4, 4]
    gen.close()


@pytest.mark.slow
def test_warm_load_skips_the_export(
    ov_llama: OVGenerator, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = _opts(tiny_llama(), "generate", cache_dir)
    key = openvino_export.export_key(
        opts.path,
        engine="openvino",
        engine_version=openvino_export.dist_version("openvino"),
        options=openvino_export.export_options("generate", "fp32"),
    )
    cache = ExportCache(cache_dir)
    assert cache.has(key)  # the module's first load exported it
    marker = (cache.path(key) / MARKER).read_bytes()
    assert (cache.path(key) / "openvino_tokenizer.xml").is_file()

    def must_not_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("a warm load must not export again")

    monkeypatch.setattr(openvino_export, "export_ir", must_not_export)
    warm = OpenVINOBackend().load_generator(opts)
    out = run_all(
        warm, [warm.encode_prompt("hello")], SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    )
    assert len(out[0]) == 3
    warm.close()
    assert (cache.path(key) / MARKER).read_bytes() == marker


@pytest.mark.parametrize("in_process", [False, True])
def test_a_generator_load_reports_its_compile_then_its_warm_up(
    ov_llama: OVGenerator, cache_dir: Path, in_process: bool
) -> None:
    seen: list[str] = []
    opts = _opts(tiny_llama(), "generate", cache_dir, extra={"pipeline_process": not in_process})
    with load_progress.reporting(seen.append):
        gen = OpenVINOBackend().load_generator(opts)
    gen.close()
    assert seen == ["compiling", "warming"]


def test_a_spare_engine_process_serves_the_next_load_and_an_unused_one_closes(cache_dir: Path) -> None:
    opts = _opts(tiny_llama(), "generate", cache_dir)
    pid = openvino_process.start_spare()
    assert openvino_process.start_spare() == pid  # one at most
    gen = OpenVINOBackend().load_generator(opts)
    try:
        assert gen._pipeline is not None and gen._pipeline.pid == pid  # the load took it
        params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
        assert len(run_all(gen, [gen.encode_prompt("hello")], params)[0]) == 3
    finally:
        gen.close()
    unused = openvino_process.start_spare(idle_s=0.5)
    assert unused != pid
    for _ in range(100):  # closed after its idle time, and reaped
        if not Path(f"/proc/{unused}").exists():
            break
        threading.Event().wait(0.1)
    assert not Path(f"/proc/{unused}").exists()
    fresh = OpenVINOBackend().load_generator(opts)
    try:
        assert fresh._pipeline is not None and fresh._pipeline.pid != unused
    finally:
        fresh.close()


def test_an_encoder_load_reports_its_compile(cache_dir: Path) -> None:
    seen: list[str] = []
    with load_progress.reporting(seen.append):
        OpenVINOBackend().load_encoder(_opts(tiny_bert(), "embed", cache_dir)).close()
    assert seen == ["compiling"]
    OpenVINOBackend().load_encoder(_opts(tiny_bert(), "embed", cache_dir)).close()
    assert seen == ["compiling"]  # outside a reporting block, nobody hears


@pytest.mark.slow
@pytest.mark.parametrize(("weight_format", "element"), [("fp16", "f16"), ("int8", "u8")])
def test_weight_formats_are_stored_as_asked(cache_dir: Path, weight_format: str, element: str) -> None:
    import openvino as ov

    opts = _opts(tiny_bert(), "embed", cache_dir, weight_format=weight_format, dtype=None)
    encoder = OpenVINOBackend().load_encoder(opts)
    ir_dir, _ = openvino_export.prepare_ir(opts, "embed", weight_format)
    model = ov.Core().read_model(ir_dir / openvino_export.IR_FILE)
    types = {
        op.get_element_type().get_type_name() for op in model.get_ops() if op.get_type_name() == "Constant"
    }
    assert element in types
    ref = OpenVINOBackend().load_encoder(_opts(tiny_bert(), "embed", cache_dir))
    a, b = encoder.embed(encoder.tokenize(TEXTS)), ref.embed(ref.tokenize(TEXTS))
    assert cosines(a, b).min() >= 0.95  # lossy, but still the same model


@pytest.mark.slow
def test_an_asked_activation_group_reaches_the_pipeline_and_a_bad_one_is_refused(
    cache_dir: Path, tmp_path: Path
) -> None:
    # int8 weights: OpenVINO quantizes activations before their matmuls, in groups of this many.
    asked = _opts(tiny_llama(), "generate", cache_dir, weight_format="int8",
                  extra={"dynamic_quantization_group_size": 16})  # fmt: skip
    gen = OpenVINOBackend().load_generator(asked)  # an unknown property would fail the compile
    try:
        assert gen.activation_group == 16
        ids = gen.encode_prompt("the quick brown fox")
        gen.add(1, ids, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
        tokens = [t for _ in range(100) if gen.has_work() for out in gen.step() for t in out.token_ids]
        assert len(tokens) == 8
    finally:
        gen.close()
    fresh = tmp_path / "cache"
    bad = dataclasses.replace(asked, cache_dir=fresh, extra={"dynamic_quantization_group_size": -1})
    with pytest.raises(InvalidRequest) as err:
        OpenVINOBackend().load_generator(bad)
    assert err.value.param == "options.dynamic_quantization_group_size"
    assert not fresh.exists()  # refused before anything was exported


def _measured_class() -> bool:
    from hfd.backends import openvino_cpu

    return openvino_cpu.activation_group(None, "int8", "bf16", hardware.probe_cpu().features) is not None


@pytest.mark.slow
@pytest.mark.skipif(
    not _measured_class(), reason="groups of 128 are the default only on AVX-512 VNNI CPUs without AMX"
)
def test_int8_weights_get_the_measured_activation_group_by_default(cache_dir: Path) -> None:
    # OpenVINO's default precision here is bf16 (AVX-512 BF16): two threads, as the daemon gives it.
    opts = _opts(tiny_llama(), "generate", cache_dir, weight_format="int8", dtype=None, threads=2)
    gen = OpenVINOBackend().load_generator(opts)
    try:
        assert (gen.precision, gen.activation_group) == ("bf16", 128)
        gen.add(1, gen.encode_prompt("the quick brown fox"), SamplingParams(max_tokens=8, temperature=0.0,
                                                                          ignore_eos=True))  # fmt: skip
        assert (
            len([t for _ in range(100) if gen.has_work() for out in gen.step() for t in out.token_ids]) == 8
        )
    finally:
        gen.close()


def test_option_errors(tmp_path: Path) -> None:
    backend = OpenVINOBackend()
    with pytest.raises(InvalidRequest) as err:
        backend.load_encoder(_opts(tiny_bert(), "embed", tmp_path, weight_format="int3"))
    assert err.value.param == "weight_format"
    with pytest.raises(InvalidRequest):
        backend.load_encoder(_opts(tiny_bert(), "embed", tmp_path, device="cuda:0"))
    if not hardware.probe_openvino().has_kind("intel_gpu"):
        with pytest.raises(ModelUnavailable, match="GPU"):
            backend.load_generator(_opts(tiny_llama(), "generate", tmp_path, device="GPU"))
    with pytest.raises(InvalidRequest):
        backend.load_encoder(_opts(tmp_path, "embed", tmp_path))  # not a model directory
    assert not (tmp_path / "exports").exists()  # nothing was exported for any of these


@pytest.mark.slow
def test_the_pipeline_runs_in_a_child_process_whose_death_is_a_clear_error(cache_dir: Path) -> None:
    # ContinuousBatchingPipeline.step() keeps the GIL, so the pipeline lives in a child process.
    gen = OpenVINOBackend().load_generator(_opts(tiny_llama(), "generate", cache_dir))
    process = gen._pipeline
    assert process is not None and process.pid != os.getpid()
    # The model is charged for its engine process: the OpenVINO runtime alone is ~100 MiB.
    assert gen.memory_bytes() >= process.rss_bytes() > 64 << 20
    ids = gen.encode_prompt("the quick brown fox")
    params = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
    gen.add(1, ids, params)
    assert any(out.token_ids for out in gen.step())
    assert gen.alive
    os.kill(process.pid, signal.SIGKILL)
    process._proc.wait(timeout=10)
    with pytest.raises(ModelUnavailable, match="engine process exited"):
        gen.add(2, ids, params)  # nobody reads the request pipe any more
    assert not gen.alive  # the model manager loads such a model again
    with pytest.raises(ModelUnavailable, match="engine process exited"):
        gen.step()  # sequence 1 is still running as far as the daemon knows
    gen.close()

    # Closing a model ends its process.
    other = OpenVINOBackend().load_generator(_opts(tiny_llama(), "generate", cache_dir))
    child = other._pipeline
    assert child is not None
    other.close()
    assert child._proc.poll() is not None
    with pytest.raises(ModelUnavailable):
        other.add(1, ids, params)


@pytest.mark.slow
def test_invalid_sampling_is_refused_by_the_engine_process(ov_llama: OVGenerator) -> None:
    ids = ov_llama.encode_prompt("hello")
    with pytest.raises(InvalidRequest, match="sampling"):
        ov_llama.add(7, ids, SamplingParams(max_tokens=4, temperature=0.5, top_p=0.0))
    assert not ov_llama.has_work()
    out = run_all(ov_llama, [ids], SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))
    assert len(out[0]) == 3  # the process goes on serving


@pytest.mark.slow
def test_interrupt_wakes_a_waiting_step_and_the_in_process_pipeline_agrees(
    ov_llama: OVGenerator, cache_dir: Path
) -> None:
    process = ov_llama._pipeline
    assert process is not None
    # Nothing is running, so without the interrupt this step() would wait for ever.
    threading.Timer(0.2, process.interrupt).start()
    assert process.step() == []

    prompts = [ov_llama.encode_prompt(p) for p in PROMPTS]
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    local = OpenVINOBackend().load_generator(
        _opts(tiny_llama(), "generate", cache_dir, extra={"pipeline_process": False})
    )
    try:
        assert local._pipeline is not None and local._pipeline.pid == os.getpid()
        assert run_all(local, prompts, params) == run_all(ov_llama, prompts, params)
    finally:
        local.close()


def test_the_engine_process_paces_its_outputs_and_loses_no_token(
    ov_llama: OVGenerator, cache_dir: Path
) -> None:
    prompts = [ov_llama.encode_prompt(p) for p in PROMPTS]
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    paced = OpenVINOBackend().load_generator(
        _opts(tiny_llama(), "generate", cache_dir, stream_interval_ms=60_000)
    )
    try:
        assert (
            paced.paces_stream and ov_llama.paces_stream
        )  # the scheduler then passes outputs on as they come
        for i, ids in enumerate(prompts):
            paced.add(i, ids, params)
        reads: list[list[StepOutput]] = []
        while paced.has_work():
            if outputs := paced.step():
                reads.append(outputs)
        # Each sequence's first token at once (all three joined the first step), then nothing
        # until their last: a minute's interval holds every token between.
        assert [sorted((o.seq_id, len(o.token_ids), o.finished) for o in r) for r in reads] == [
            [(0, 1, None), (1, 1, None), (2, 1, None)],
            [(0, 23, "length"), (1, 23, "length"), (2, 23, "length")],
        ]
        got = {o.seq_id: [] for o in reads[0]}
        for r in reads:
            for o in r:
                got[o.seq_id] += o.token_ids
        assert got == run_all(ov_llama, prompts, params)
    finally:
        paced.close()
