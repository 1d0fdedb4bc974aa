"""One list of pickled weight formats, read by the store and by the engines alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfd.backends import _hf, formats
from hfd.daemon.store import safety


@pytest.mark.parametrize("suffix", sorted(formats.PICKLE_SUFFIXES))
def test_the_store_and_the_engines_call_the_same_files_pickles(tmp_path: Path, suffix: str) -> None:
    (tmp_path / f"weights{suffix}").write_bytes(b"x")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert safety.is_pickle(f"weights{suffix}")
    # ".pickle" was missing from the engines' copy of the list: a model directory holding only
    # such a file was not seen as pickled by the engines while the store refused it.
    assert [p.name for p in _hf.pickled_weights(tmp_path)] == [f"weights{suffix}"]
    assert [p.name for p in _hf.safetensors_weights(tmp_path)] == ["model.safetensors"]


def test_one_list() -> None:
    assert safety.PICKLE_SUFFIXES is formats.PICKLE_SUFFIXES is _hf.PICKLE_SUFFIXES
    assert formats.is_pickle("a/B.PT") and not formats.is_pickle("model.safetensors")
