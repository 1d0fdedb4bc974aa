"""Reading sentence-transformers folders of both layouts, and the pooling heads that apply them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hfd.backends import numpy_encoder
from hfd.backends.st_config import ACTIVATIONS, Dense, Normalize, read_pooling_config
from hfd.client.errors import InvalidRequest

OLD = "sentence_transformers.models."
NEW_DENSE = "sentence_transformers.base.modules.dense.Dense"
NEW_POOLING = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
NEW_NORMALIZE = "sentence_transformers.base.modules.normalize.Normalize"
NEW_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _folder(root: Path, modules: list[tuple[str, str, dict[str, Any] | None]]) -> Path:
    """modules: (type, path, config or None)."""
    entries = []
    for idx, (kind, sub, config) in enumerate(modules):
        entries.append({"idx": idx, "name": str(idx), "path": sub, "type": kind})
        if sub:
            (root / sub).mkdir(parents=True, exist_ok=True)
        if config is not None:
            _write(root / sub / "config.json", config)
    _write(root / "modules.json", entries)
    return root


def _dense_weights(folder: Path, out: int, inp: int, residual: bool = False) -> None:
    from safetensors.numpy import save_file

    rng = np.random.RandomState(3)
    weights = {
        "linear.weight": rng.randn(out, inp).astype(np.float32),
        "linear.bias": rng.randn(out).astype(np.float32),
    }
    if residual:
        weights["residual.weight"] = rng.randn(out, inp).astype(np.float32)
    save_file(weights, str(folder / "model.safetensors"))


def test_the_old_layout_concatenates_flags_in_sentence_transformers_order(tmp_path: Path) -> None:
    # Flags listed in another order in the file: sentence-transformers still concatenates cls
    # before mean.
    pooling = {
        "pooling_mode_mean_tokens": True,
        "pooling_mode_cls_token": True,
        "word_embedding_dimension": 8,
    }
    folder = _folder(tmp_path, [(OLD + "Transformer", "", None), (OLD + "Pooling", "1_Pooling", pooling),
                                (OLD + "Normalize", "2_Normalize", None)])  # fmt: skip
    config = read_pooling_config(folder)
    assert config.modes == ("cls", "mean") and config.word_embedding_dimension == 8
    assert config.steps == (Normalize(),) and config.normalize
    assert config.output_dimensions(8) == 16


def test_the_new_layout_keeps_its_mode_order_and_names(tmp_path: Path) -> None:
    pooling = {
        "embedding_dimension": 8,
        "pooling_mode": ["mean_sqrt_len_tokens", "lasttoken"],
        "include_prompt": False,
    }
    folder = _folder(tmp_path, [(NEW_TRANSFORMER, "", None), (NEW_POOLING, "1_Pooling", pooling),
                                (NEW_NORMALIZE, "2_Normalize", {"module_input_name": "sentence_embedding"})])  # fmt: skip
    config = read_pooling_config(folder)
    assert config.modes == ("mean_sqrt_len", "lasttoken")
    assert config.word_embedding_dimension == 8 and config.include_prompt is False and config.normalize


@pytest.mark.parametrize("kind", [OLD + "Dense", NEW_DENSE])
def test_dense_modules_of_both_layouts_are_read(tmp_path: Path, kind: str) -> None:
    folder = _folder(tmp_path, [(NEW_TRANSFORMER, "", None), (NEW_POOLING, "1_Pooling", {"pooling_mode": "cls"}),
                                (kind, "2_Dense", {"in_features": 4, "out_features": 3,
                                                   "activation_function": "torch.nn.modules.activation.GELU"})])  # fmt: skip
    _dense_weights(folder / "2_Dense", 3, 4)
    config = read_pooling_config(folder)
    (dense,) = config.steps
    assert isinstance(dense, Dense) and dense.activation == "GELU" and dense.weight.shape == (3, 4)
    assert config.output_dimensions(4) == 3
    with pytest.raises(InvalidRequest, match="takes 4 features"):
        config.output_dimensions(5)


@pytest.mark.parametrize(
    ("dense", "match"),
    [
        ({"activation_function": "my_package.Swish"}, "activation"),
        ({"module_input_name": "token_embeddings"}, "token_embeddings"),
    ],
)
def test_a_dense_module_hfd_cannot_reproduce_is_refused(
    tmp_path: Path, dense: dict[str, Any], match: str
) -> None:
    folder = _folder(tmp_path, [(NEW_TRANSFORMER, "", None), (NEW_POOLING, "1_Pooling", {}),
                                (NEW_DENSE, "2_Dense", {"in_features": 4, "out_features": 3, **dense})])  # fmt: skip
    _dense_weights(folder / "2_Dense", 3, 4)
    with pytest.raises(InvalidRequest, match=match):
        read_pooling_config(folder)


def test_pickled_dense_weights_are_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [(NEW_TRANSFORMER, "", None), (NEW_POOLING, "1_Pooling", {}),
                                (NEW_DENSE, "2_Dense", {"in_features": 4, "out_features": 3})])  # fmt: skip
    (folder / "2_Dense" / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(InvalidRequest, match=r"pickled pytorch_model\.bin"):
        read_pooling_config(folder)


@pytest.mark.parametrize(
    ("modules", "match"),
    [
        ([(OLD + "Transformer", "0_Transformer", None), (OLD + "Pooling", "1_Pooling", {})], "sub-folder"),
        ([(NEW_TRANSFORMER, "", None), (OLD + "LSTM", "1_LSTM", {})], "LSTM"),
        ([(NEW_TRANSFORMER, "", None), ("my_package.Pooling", "1_Pooling", {})], "my_package"),
    ],
)
def test_modules_hfd_cannot_reproduce_are_refused(tmp_path: Path, modules: list[Any], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        read_pooling_config(_folder(tmp_path, modules))


def test_no_modules_json_means_mean_pooling_and_do_lower_case_is_read(tmp_path: Path) -> None:
    _write(tmp_path / "sentence_bert_config.json", {"max_seq_length": 64, "do_lower_case": True})
    config = read_pooling_config(tmp_path)
    assert config.modes == ("mean",) and not config.from_config
    assert config.max_seq_length == 64 and config.lowercase


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    "modes", [("mean",), ("cls",), ("max",), ("lasttoken",), ("weightedmean", "mean_sqrt_len")]
)
def test_numpy_and_torch_heads_agree_with_sentence_transformers(
    tmp_path: Path, activation: str, modes: tuple[str, ...]
) -> None:
    torch = pytest.importorskip("torch")
    st_modules = pytest.importorskip("sentence_transformers.base.modules")
    from sentence_transformers.sentence_transformer.modules import Pooling

    from hfd.backends import torch_encoder

    width = 4 * len(modes)
    folder = _folder(tmp_path, [(NEW_TRANSFORMER, "", None),
                                (NEW_POOLING, "1_Pooling", {"embedding_dimension": 4,
                                                            "pooling_mode": [m if m != "mean_sqrt_len" else "mean_sqrt_len_tokens" for m in modes]}),
                                (NEW_DENSE, "2_Dense", {"in_features": width, "out_features": 3, "use_residual": True,
                                                        "activation_function": f"torch.nn.{activation}"}),
                                (NEW_NORMALIZE, "3_Normalize", {})])  # fmt: skip
    _dense_weights(folder / "2_Dense", 3, width, residual=True)
    config = read_pooling_config(folder)
    rng = np.random.RandomState(0)
    hidden = rng.randn(3, 5, 4).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=np.int64)

    # sentence-transformers' own modules, with the same weights.
    st_names = [m if m != "mean_sqrt_len" else "mean_sqrt_len_tokens" for m in modes]
    features = {"token_embeddings": torch.from_numpy(hidden), "attention_mask": torch.from_numpy(mask)}
    features = Pooling(4, tuple(st_names) if len(st_names) > 1 else st_names[0])(features)
    dense = st_modules.Dense(width, 3, activation_function=getattr(torch.nn, activation)(), use_residual=True)
    step = config.steps[0]
    with torch.no_grad():
        dense.linear.weight.copy_(torch.from_numpy(step.weight))
        dense.linear.bias.copy_(torch.from_numpy(step.bias))
        dense.residual.weight.copy_(torch.from_numpy(step.residual))
        want = st_modules.Normalize()(dense(features))["sentence_embedding"].numpy()

    got_numpy = numpy_encoder.pool(hidden, mask, config)
    got_torch = torch_encoder.pool(torch.from_numpy(hidden), torch.from_numpy(mask), config).numpy()
    np.testing.assert_allclose(got_numpy, want, atol=1e-5)
    np.testing.assert_allclose(got_torch, want, atol=1e-5)


def test_a_default_prompt_is_named_in_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path / "config_sentence_transformers.json",
           {"prompts": {"query": "query: ", "document": ""}, "default_prompt_name": "query"})  # fmt: skip
    with caplog.at_level("WARNING", logger="hfd.backends.st_config"):
        read_pooling_config(tmp_path)
    assert any("default prompt not applied" in r.getMessage() for r in caplog.records)
