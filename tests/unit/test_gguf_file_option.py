"""The model option ``gguf_file`` names the file the OpenVINO engine serves: also from a snapshot
that has safetensors too (the file the user named is served, never an export of the other
weights), and a name that is not there is refused listing the snapshot's GGUF files. No engine
is needed: a GGUF is handed to GenAI as it is, before anything is exported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.fake_models import fake_model

from hfd.backends import gguf
from hfd.backends.base import LoadOptions
from hfd.backends.openvino_export import prepare_ir, resolve_weight_format
from hfd.client.errors import InvalidRequest


@pytest.fixture
def both(tmp_path: Path) -> Path:
    """A generation snapshot with safetensors and two GGUF files beside them."""
    path = fake_model(tmp_path, "llama", name="both")
    (path / "both-Q8_0.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    (path / "both-F16.gguf").write_bytes(b"GGUF" + b"\0" * 120)
    return path


def _opts(path: Path, tmp: Path, **extra: str) -> LoadOptions:
    return LoadOptions(path=path, task="generate", cache_dir=tmp / "cache", extra=dict(extra))


def test_the_named_gguf_file_is_served_beside_safetensors(both: Path, tmp_path: Path) -> None:
    opts = _opts(both, tmp_path, gguf_file="both-Q8_0.gguf")
    assert gguf.serves_gguf(both, "both-Q8_0.gguf") and not gguf.serves_gguf(both, None)
    assert resolve_weight_format(opts, "CPU") == gguf.WEIGHT_FORMAT
    assert prepare_ir(opts, "generate", gguf.WEIGHT_FORMAT) == (both / "both-Q8_0.gguf", False)
    assert not (tmp_path / "cache").exists()  # nothing was exported


def test_a_gguf_file_that_is_not_there_is_refused_naming_those_that_are(both: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"gguf_file='other.gguf' is not in the snapshot.*both-F16.gguf"):
        prepare_ir(_opts(both, tmp_path, gguf_file="other.gguf"), "generate", gguf.WEIGHT_FORMAT)
    plain = tmp_path / "plain"
    shutil.copytree(both, plain, ignore=shutil.ignore_patterns("*.gguf"))
    with pytest.raises(InvalidRequest, match="it has none"):  # never an export of the safetensors instead
        prepare_ir(_opts(plain, tmp_path, gguf_file="both-Q8_0.gguf"), "generate", gguf.WEIGHT_FORMAT)
