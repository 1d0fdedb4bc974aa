"""Pickled weights are left out or refused unless allowed."""

from __future__ import annotations

import pytest

from hfd.client.errors import Forbidden
from hfd.daemon.store.safety import select_files


def test_pickles_are_left_out_when_safe_weights_exist() -> None:
    files = ["config.json", "model.safetensors", "pytorch_model.bin", "training_args.pkl"]
    assert select_files(files, allow_pickle=False, model="m") == ["config.json", "model.safetensors"]
    assert select_files(files, allow_pickle=True, model="m") == files


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.pt", "model.pth", "weights.PKL"])
def test_pickle_only_models_are_refused(weights: str) -> None:
    with pytest.raises(Forbidden) as err:
        select_files(["config.json", weights], allow_pickle=False, model="acme/old")
    assert weights in err.value.message and "--allow-pickle" in err.value.message
    assert select_files(["config.json", weights], allow_pickle=True, model="acme/old") == [
        "config.json",
        weights,
    ]


def test_models_without_weights_pass() -> None:
    assert select_files(["tokenizer.json"], allow_pickle=False, model="m") == ["tokenizer.json"]
