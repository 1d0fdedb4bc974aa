"""``suffix`` (fill-in-the-middle): a model whose tokenizer has FIM tokens gets the PSM prompt
with the markers as single tokens; a model without them is refused naming ``suffix``."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.models import tiny_llama  # noqa: E402

from hfd.backends.base import LoadOptions  # noqa: E402
from hfd.backends.fake_backend import FakeBackend  # noqa: E402
from hfd.backends.torch_backend import TorchBackend  # noqa: E402
from hfd.client.errors import InvalidRequest  # noqa: E402
from hfd.daemon import fim  # noqa: E402


def _with_fim_tokens(out: Path) -> Path:
    src = tiny_llama()
    tok = transformers.AutoTokenizer.from_pretrained(src)
    tok.add_special_tokens({"additional_special_tokens": ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]})
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_a_fim_model_gets_the_psm_prompt(tmp_path: Path) -> None:
    path = _with_fim_tokens(tmp_path / "fim")
    gen = TorchBackend().load_generator(LoadOptions(path=path, task="generate"))
    try:
        text = fim.prompt(gen, "def add(a, b):\n    return ", "\n\nprint(add(1, 2))", "fim")
        assert text.startswith("<fim_prefix>def add") and text.endswith("<fim_middle>")
        ids = gen.encode_prompt(text)
        marks = [gen.special_token_id(t) for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")]
        assert all(m is not None for m in marks)
        assert [i for i in ids if i in marks] == marks  # each marker one token, in PSM order
        assert ids[-1] == marks[2]
    finally:
        gen.close()


def test_a_model_without_fim_tokens_is_refused() -> None:
    plain = TorchBackend().load_generator(LoadOptions(path=tiny_llama(), task="generate"))
    fake = FakeBackend().load_generator(LoadOptions(path=Path("."), task="generate"))
    try:
        for model in (plain, fake):
            with pytest.raises(InvalidRequest) as info:
                fim.prompt(model, "a", "b", "m")
            assert info.value.param == "suffix"
    finally:
        plain.close()
