"""Every causal-LM family of the matrix (docs/engines.md), on every engine that can serve it,
gives transformers' own greedy text: two prompts of different lengths, batched together and
each alone, fp32, a fixed number of new tokens (eos masked, as ``min_new_tokens`` does).

Where an engine cannot serve a family with the pinned versions, its load refuses at once with
the reason (``backends/families.py``), and that table is checked against the exporter itself.

OpenVINO exports take ~10-40 s each on 2 cores; they are cached under
``<repo>/.cache/test-exports`` across runs, and only ``OV_DEFAULT`` runs by default: the rest
is ``slow`` and runs with ``HFD_TEST_FULL_MATRIX=1``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.causal_models import FAMILIES, causal_model  # noqa: E402
from support.models import REPO_ROOT  # noqa: E402

from hfd.backends import families  # noqa: E402
from hfd.backends.base import GenerationModel, LoadOptions, SamplingParams  # noqa: E402
from hfd.backends.torch_backend import TorchBackend  # noqa: E402
from hfd.backends.torch_recurrent import RecurrentBatcher  # noqa: E402
from hfd.client.errors import ModelUnavailable  # noqa: E402

N = 12
PARAMS = SamplingParams(max_tokens=N, temperature=0.0, ignore_eos=True, min_tokens=N)
# The long prompt (~47 tokens) is longer than the sliding windows of the tiny models (16).
TEXTS = [
    "Hello",
    "The quick brown fox jumps over the lazy dog. Cats sleep for most of the day, while dogs prefer to play.",
]
EXPORTS = REPO_ROOT / ".cache" / "test-exports"

# OpenVINO families in the default run: a spread of what the exporter does differently
# (rotary GQA, learned positions with Conv1D QKV, a mixture of experts); the others are slow.
OV_DEFAULT = ("llama", "gpt2", "qwen3_moe")
OV_GAPS = tuple(n for n, f in FAMILIES.items() if families.gap("openvino", "generate", f.model_type))
OV_EXPORTABLE = tuple(n for n in FAMILIES if n not in OV_GAPS)

_references: dict[str, list[list[int]]] = {}


def reference(name: str, prompts: list[list[int]]) -> list[list[int]]:
    """transformers' greedy continuation of each prompt, alone, fp32."""
    if name not in _references:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            causal_model(name), local_files_only=True, dtype=torch.float32
        ).eval()
        out = []
        with torch.inference_mode():
            for prompt in prompts:
                ids = model.generate(
                    torch.tensor([prompt]), max_new_tokens=N, min_new_tokens=N, do_sample=False
                )
                out.append([int(t) for t in ids[0, len(prompt) :]])
        _references[name] = out
        # The wide weights make the text depend on the context: otherwise this proves little.
        assert out[0] != out[1] and all(len(set(o)) > 2 for o in out)
    return _references[name]


def run(model: GenerationModel, prompts: list[list[int]]) -> list[list[int]]:
    """Add every prompt at once and step to the end; tokens per prompt."""
    tokens: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        model.add(i, prompt, PARAMS)
    steps = 0
    while model.has_work():
        for out in model.step():
            tokens.setdefault(out.seq_id, []).extend(out.token_ids)
        steps += 1
        assert steps < 500
    return [tokens[i] for i in range(len(prompts))]


def check_greedy(name: str, model: GenerationModel) -> None:
    prompts = [model.encode_prompt(t) for t in TEXTS]  # type: ignore[attr-defined]
    want = reference(name, prompts)
    assert run(model, prompts) == want, "batched"
    assert [run(model, [p])[0] for p in prompts] == want, "alone"


# -- torch: every family ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
def test_torch_greedy_equals_transformers(name: str) -> None:
    gen = TorchBackend().load_generator(
        LoadOptions(path=causal_model(name), task="generate", max_running=8, dtype="float32")
    )
    try:
        # State-space models take the recurrent path, found from the cache layout.
        assert isinstance(gen._batcher, RecurrentBatcher) == FAMILIES[name].recurrent
        check_greedy(name, gen)
    finally:
        gen.close()


@pytest.mark.parametrize("name", ["mamba", "granitemoehybrid", "lfm2"])
def test_recurrent_rows_join_and_leave_a_running_batch(name: str) -> None:
    # Recurrent and hybrid rows decode together (stacked states; hybrids' K/V left-padded for
    # the step): rows that join while others run and rows that finish early must not disturb
    # the others' state.
    gen = TorchBackend().load_generator(LoadOptions(path=causal_model(name), task="generate", max_running=8))
    try:
        prompts = [gen.encode_prompt(t) for t in TEXTS]
        want = reference(name, prompts)
        short = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True, min_tokens=3)
        gen.add(0, prompts[0], PARAMS)
        gen.add(1, prompts[1], short)
        tokens: dict[int, list[int]] = {}
        step = 0
        while gen.has_work():
            if step == 3:
                gen.add(2, prompts[1], PARAMS)
            for out in gen.step():
                tokens.setdefault(out.seq_id, []).extend(out.token_ids)
            step += 1
        assert tokens == {0: want[0], 1: want[1][:3], 2: want[1]}
        assert gen._batcher.cache_bytes() == 0
    finally:
        gen.close()


# -- OpenVINO -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openvino() -> Iterator[Any]:
    pytest.importorskip("openvino_genai", reason="the openvino extra is not installed")
    pytest.importorskip("optimum.intel", reason="optimum-intel is not installed")
    from hfd.backends.openvino_backend import OpenVINOBackend

    yield OpenVINOBackend()


# CI runs every test, slow ones too: the rest of the OpenVINO matrix runs only when asked for.
FULL = os.environ.get("HFD_TEST_FULL_MATRIX") == "1"
_FULL_ONLY = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not FULL, reason="the full OpenVINO matrix runs with HFD_TEST_FULL_MATRIX=1 (~20 s an export)"
    ),
]


def _ov_params() -> list[Any]:
    return [n if n in OV_DEFAULT else pytest.param(n, marks=_FULL_ONLY) for n in OV_EXPORTABLE]


def _measured_gaps() -> list[Any]:
    table = families.GAPS["openvino"]["generate"]
    return [
        pytest.param(
            n,
            marks=[*_FULL_ONLY, pytest.mark.xfail(strict=True, reason=table[f.model_type].reason)],
        )
        for n, f in FAMILIES.items()
        if f.model_type in table and table[f.model_type].measured
    ]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", _ov_params())
def test_openvino_greedy_equals_transformers(openvino: Any, name: str) -> None:
    # float32 pinned: OpenVINO computes in bf16 on CPUs with native bf16 otherwise.
    gen = openvino.load_generator(
        LoadOptions(
            path=causal_model(name), task="generate", max_running=8, dtype="float32", cache_dir=EXPORTS
        )
    )
    try:
        check_greedy(name, gen)
    finally:
        gen.close()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", _measured_gaps())
def test_openvino_families_refused_for_wrong_text_still_give_it(
    openvino: Any, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused because their text was seen to differ: when this starts passing (xfail strict
    # fails), the entry in backends/families.py can go.
    monkeypatch.setattr(families, "check", lambda *args: None)
    test_openvino_greedy_equals_transformers(openvino, name)


@pytest.mark.parametrize("name", OV_GAPS)
def test_openvino_refuses_a_family_it_cannot_export_before_exporting(
    openvino: Any, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hfd.backends import openvino_export

    def no_export(*args: object) -> None:
        raise AssertionError("an export was attempted")

    monkeypatch.setattr(openvino_export, "export_ir", no_export)
    with pytest.raises(ModelUnavailable) as info:
        openvino.load_generator(LoadOptions(path=causal_model(name), task="generate", cache_dir=tmp_path))
    assert str(families.gap("openvino", "generate", FAMILIES[name].model_type)) in info.value.message
    assert not (tmp_path / "exports").exists()


def _optimum_verdict(model_type: str, task: str) -> bool:
    """Whether optimum-intel itself would export this model type here."""
    import optimum.exporters.openvino.model_configs  # noqa: F401  registers the OpenVINO configs
    from optimum.exporters.tasks import TasksManager
    from packaging.version import Version

    try:
        ctor = TasksManager.get_exporter_config_constructor(
            "openvino", task=task, model_type=model_type, library_name="transformers"
        )
    except (KeyError, ValueError):
        return False
    cls = getattr(ctor, "func", ctor)
    installed = Version(transformers.__version__)
    low, high = getattr(cls, "MIN_TRANSFORMERS_VERSION", None), getattr(cls, "MAX_TRANSFORMERS_VERSION", None)
    if low is not None and installed < Version(str(low)):
        return False
    return not (high is not None and installed > Version(str(high)))


def test_the_gap_table_agrees_with_optimum_intel(openvino: Any) -> None:
    tasks = {"generate": "text-generation-with-past", "embed": "feature-extraction"}
    kinds = {
        (t, m) for t, table in families.GAPS["openvino"].items() for m, g in table.items() if not g.measured
    }
    measured = {m for m, g in families.GAPS["openvino"]["generate"].items() if g.measured}
    kinds |= {("generate", f.model_type) for f in FAMILIES.values() if f.model_type not in measured}
    wrong = {
        (task, kind)
        for task, kind in kinds
        if (families.gap("openvino", task, kind) is None) != _optimum_verdict(kind, tasks[task])
    }
    assert not wrong, f"backends/families.py disagrees with optimum-intel on {sorted(wrong)}"


# -- the manager: a family OpenVINO cannot export goes to torch at once ---------------------------------


@pytest.mark.anyio
async def test_default_order_serves_gemma_on_torch_without_trying_an_export(
    openvino: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from hfd.backends import hardware, openvino_export, policy
    from hfd.daemon.models.manager import ModelManager
    from hfd.daemon.settings import ModelSpec, load_settings, with_overrides

    # The preferred engine for generation on this box, before any model is known.
    if policy.choose_engine("generate", hardware.detect())[0].engine != "openvino":
        pytest.skip("OpenVINO is not the first engine for generation here (not an x86 CPU)")

    exports: list[object] = []
    monkeypatch.setattr(openvino_export, "export_ir", lambda *a: exports.append(a))
    base = load_settings(
        environ={"HFD_CACHE_DIR": str(tmp_path / "cache"), "HFD_STATE_DIR": str(tmp_path / "state")}
    )
    spec = ModelSpec(ref=str(causal_model("gemma")), name="g", threads=1)
    manager = ModelManager(with_overrides(base, models=(spec,)))
    try:
        caplog.set_level(logging.INFO)
        lm = await manager.load("g")
        assert lm.engine == "torch"
    finally:
        await manager.aclose()
    assert exports == [] and not (tmp_path / "cache" / "exports").exists()
    skipped = [
        r
        for r in caplog.records
        if r.getMessage() == "skipping an engine untried"  # its family: the reason says which
    ]
    assert [(r.engine, r.model_type) for r in skipped] == [("openvino", "gemma")]  # type: ignore[attr-defined]
    assert "transformers <= 5.0" in skipped[0].reason  # type: ignore[attr-defined]


# -- one chat completion through a real daemon, per engine ------------------------------------------


def httpx_get(base_url: str, path: str) -> Any:
    import httpx

    root = base_url.removesuffix("/").removesuffix("/v1")
    response = httpx.get(root + path, timeout=30)
    response.raise_for_status()
    return response.json()


def _chat_reference(name: str, content: str, max_tokens: int) -> str:
    """transformers' greedy reply to one user message (stopping at eos), as text."""
    path = causal_model(name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


@pytest.mark.timeout(600)
def test_a_chat_completion_through_the_daemon_on_each_engine(tmp_path: Path) -> None:
    # One daemon, two models: a state-space model on torch (the recurrent path) and a
    # transformer on OpenVINO (when installed). Other tests cover the daemon path itself.
    openai = pytest.importorskip("openai")
    from support.daemon import start_daemon

    served = {"ssm": ("torch", "mamba")}
    try:
        import openvino_genai  # noqa: F401

        served["ov"] = ("openvino", "qwen3_moe")
    except ImportError:
        pass
    config = "".join(
        f"[[models]]\nname = {alias!r}\nref = {str(causal_model(name))!r}\nengine = {engine!r}\n"
        "[models.options]\ndtype = 'float32'\n\n"
        for alias, (engine, name) in served.items()
    )
    # The OpenVINO export is the matrix test's (same cache); no response cache: the engine answers.
    args = ["--cache-dir", str(EXPORTS), "--cache-enabled", "false", "--threads", "2"]
    daemon = start_daemon(tmp_path, {}, extra_config=config, args=args)
    try:
        client = openai.OpenAI(base_url=daemon.base_url, api_key="none", timeout=300)
        replies = {
            alias: client.chat.completions.create(
                model=alias, messages=[{"role": "user", "content": "Hello"}], temperature=0, max_tokens=8
            )
            for alias in served
        }
        ps = httpx_get(daemon.base_url, "/api/ps")
    finally:
        daemon.stop()
    assert {m["name"]: m["engine"] for m in ps["models"]} == {a: e for a, (e, _) in served.items()}
    for alias, (_, name) in served.items():
        content = replies[alias].choices[0].message.content
        assert content and content == _chat_reference(name, "Hello", 8), alias
