"""Sampling features end to end on the torch engine: the official ``openai`` client against a
real ``hfd serve`` (n=3, logprobs with top_logprobs equal to transformers' scores, completions
echo + logprobs over a list of prompts), and lm-eval's ``local-completions`` model running a
multiple-choice loglikelihood task from a local dataset."""

# The openai SDK types every field Optional; these tests assert they are there.
# mypy: disable-error-code="union-attr,arg-type,index"
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.daemon import Daemon, running_daemon  # noqa: E402
from support.models import tiny_llama  # noqa: E402

MESSAGES = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def model_path() -> Path:
    return tiny_llama()


def _with_fim_tokens(out: Path) -> Path:
    """The tiny Llama with StarCoder's fill-in-the-middle tokens added."""
    tok = transformers.AutoTokenizer.from_pretrained(tiny_llama())
    tok.add_special_tokens({"additional_special_tokens": ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]})
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama(), dtype=torch.float32)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("sampling-torch")
    fim = _with_fim_tokens(root / "fim")
    models = f'[[models]]\nname = "chat"\nref = {str(model_path)!r}\nengine = "torch"\n'
    models += f'[[models]]\nname = "fim"\nref = {str(fim)!r}\nengine = "torch"\n'
    with running_daemon(root / "work", {}, extra_config=models) as d:
        yield d


@pytest.fixture(scope="module")
def oa(daemon: Daemon) -> openai.OpenAI:
    return daemon.openai()


def test_chat_n_3_and_greedy_logprobs_match_transformers(oa: openai.OpenAI, model_path: Path) -> None:
    r = oa.chat.completions.create(
        model="chat", messages=MESSAGES, n=3, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 1  # greedy: all alike
    tok = transformers.AutoTokenizer.from_pretrained(model_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    prompt = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt)
    with torch.inference_mode():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=5, min_new_tokens=5, do_sample=False)
        ref = hf(out).logits[0].log_softmax(-1)
    generated = out[0, len(prompt) :].tolist()
    content = r.choices[0].logprobs.content
    assert [e.token for e in content] == [tok.decode([t], skip_special_tokens=True) for t in generated]
    for j, (t, e) in enumerate(zip(generated, content, strict=True)):
        assert e.logprob == pytest.approx(float(ref[len(prompt) - 1 + j, t]), abs=1e-4)
        assert len(e.top_logprobs) == 3 and e.top_logprobs[0].logprob == pytest.approx(e.logprob, abs=1e-6)


def test_completions_echo_logprobs_over_prompts_and_token_ids(oa: openai.OpenAI, model_path: Path) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(model_path)
    ids = tok("The cat sat on the mat")["input_ids"]
    r = oa.completions.create(model="chat", prompt=[ids, ids[:3]], echo=True, logprobs=1, max_tokens=0)
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    with torch.inference_mode():
        ref = hf(torch.tensor([ids])).logits[0].log_softmax(-1)
    full = r.choices[0].logprobs
    assert full.token_logprobs[0] is None and len(full.token_logprobs) == len(ids)
    for j in range(1, len(ids)):
        assert full.token_logprobs[j] == pytest.approx(float(ref[j - 1, ids[j]]), abs=1e-4)
    assert r.choices[1].logprobs.token_logprobs[1:] == pytest.approx(full.token_logprobs[1:3], abs=1e-4)
    assert r.usage.completion_tokens == 0
    texts = oa.completions.create(
        model="chat", prompt=["Hello", "Rain"], n=2, max_tokens=3, temperature=0.7, seed=3
    )
    assert [c.index for c in texts.choices] == [0, 1, 2, 3]


def test_penalties_and_logit_bias(oa: openai.OpenAI) -> None:
    forced = oa.completions.create(
        model="chat",
        prompt="Hello",
        max_tokens=4,
        temperature=0,
        logit_bias={"42": 100},
        extra_body={"ignore_eos": True},
    )
    plain = oa.completions.create(
        model="chat", prompt="Hello", max_tokens=4, temperature=0, logprobs=0, echo=False
    )
    assert forced.choices[0].text != plain.choices[0].text
    with pytest.raises(openai.BadRequestError) as bad:
        oa.completions.create(model="chat", prompt="Hello", max_tokens=4, logit_bias={"999999": 1})
    assert bad.value.body["param"] == "logit_bias"  # type: ignore[index]
    oa.completions.create(
        model="chat", prompt="Hello", max_tokens=4, presence_penalty=1, frequency_penalty=1,
        extra_body={"repetition_penalty": 1.3},
    )  # fmt: skip


def test_suffix_fills_the_middle_on_a_fim_model(oa: openai.OpenAI) -> None:
    r = oa.completions.create(
        model="fim", prompt="def f(x):", suffix="return y", max_tokens=3, temperature=0, echo=True,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert r.choices[0].text.startswith("def f(x):")  # echo gives the prompt, not the FIM markers
    assert r.usage.completion_tokens == 3
    with pytest.raises(openai.BadRequestError) as none:
        oa.completions.create(model="chat", prompt="def f(x):", suffix="return y", max_tokens=3)
    assert none.value.body["param"] == "suffix"  # type: ignore[index]


TASK = """task: hfd_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


@pytest.mark.slow  # lm-eval's start-up (datasets, pandas) is most of a minute; bounded by the timeout
def test_lm_eval_local_completions_runs_a_multiple_choice_task(
    daemon: Daemon, model_path: Path, tmp_path: Path
) -> None:
    pytest.importorskip("lm_eval")
    data = tmp_path / "mc.jsonl"
    rows = [
        {"question": "The sky is", "choices": [" blue", " green"], "answer": 0},
        {"question": "Two plus two is", "choices": [" four", " five", " six"], "answer": 0},
        {"question": "Cats say", "choices": [" meow", " woof"], "answer": 0},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "hfd_tiny_mc.yaml").write_text(TASK.format(data=data))
    out = tmp_path / "out"
    args = (
        f"base_url={daemon.http}/v1/completions,model=chat,tokenizer={model_path},"
        "tokenizer_backend=huggingface,num_concurrent=1,max_retries=1,tokenized_requests=True"
    )
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", args,
         "--tasks", "hfd_tiny_mc", "--include_path", str(tasks), "--output_path", str(out),
         "--batch_size", "2"],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in out.rglob("results*.json")]
    assert results, proc.stdout[-2000:]
    acc = results[0]["results"]["hfd_tiny_mc"]["acc,none"]
    assert 0.0 <= acc <= 1.0
