"""``scripts/bench``'s machine bounds: the arithmetic that turns bandwidth and matmul peak into
tokens/s a model can reach, and the parameter count read from safetensors headers."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from bench_lib import bounds  # noqa: E402
from bench_lib.peers import ratios  # noqa: E402


def _safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    """A safetensors file of zero fp32 tensors of these shapes, written by its format's rules."""
    header: dict[str, object] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def _llama(tmp_path: Path, *, tied: bool) -> Path:
    vocab, hidden, inter = 100, 8, 16
    shapes = {
        "model.embed_tokens.weight": [vocab, hidden],
        "model.layers.0.self_attn.q_proj.weight": [hidden, hidden],
        "model.layers.0.mlp.up_proj.weight": [inter, hidden],
        "model.norm.weight": [hidden],
    }
    if not tied:
        shapes["lm_head.weight"] = [vocab, hidden]
    _safetensors(tmp_path / "model.safetensors", shapes)
    return tmp_path


def test_a_token_reads_one_row_of_a_separate_embedding_table(tmp_path: Path) -> None:
    w = bounds.weights_of(_llama(tmp_path, tied=False))
    assert w.parameters == 100 * 8 + 8 * 8 + 16 * 8 + 8 + 100 * 8
    assert (w.embedding_rows, w.hidden) == (100, 8)
    assert w.read_per_token == w.parameters - 99 * 8


def test_a_tied_table_is_read_whole_as_the_output_head(tmp_path: Path) -> None:
    w = bounds.weights_of(_llama(tmp_path, tied=True))
    assert w.embedding_rows == 0
    assert w.read_per_token == w.parameters == 100 * 8 + 8 * 8 + 16 * 8 + 8


def test_a_folder_without_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no safetensors"):
        bounds.weights_of(tmp_path)


def test_bytes_per_weight_follow_the_format_or_a_narrower_precision() -> None:
    assert bounds.bytes_per_weight("fp32") == bounds.bytes_per_weight("f32") == 4.0
    assert bounds.bytes_per_weight("q8_0") == pytest.approx(1.0625)
    assert bounds.bytes_per_weight("int8") == 1.0
    assert bounds.bytes_per_weight("f32", "bf16") == 2.0  # compiled to bf16: read as bf16
    assert bounds.bytes_per_weight("int8", "f32") == 1.0
    assert bounds.bytes_per_weight(None, "f16") == 2.0
    with pytest.raises(ValueError, match="unknown weight format"):
        bounds.bytes_per_weight("gptq", None)


W = bounds.Weights(parameters=50_000_000, embedding_rows=0, hidden=512)


def test_one_stream_is_bound_by_bandwidth_over_weight_bytes() -> None:
    # 20 GB/s over 50M fp32 weights (200 MB a token): 100 tokens/s; q8_0 reads 53.1 MB.
    assert bounds.one_stream_bound(20e9, W, 4.0) == pytest.approx(100.0)
    assert bounds.one_stream_bound(20e9, W, 34 / 32) == pytest.approx(20e9 / (50e6 * 1.0625))


def test_many_streams_are_bound_by_the_lower_of_compute_and_bandwidth() -> None:
    # 100 GFLOP/s over 2 x 50M FLOPs a token: 1000 tokens/s; 32 streams could read 3200.
    assert bounds.batched_bound(100e9, 20e9, W, 4.0, 32) == pytest.approx(1000.0)
    # 4 streams: bandwidth allows 400, below the compute bound.
    assert bounds.batched_bound(100e9, 20e9, W, 4.0, 4) == pytest.approx(400.0)


def test_levels_get_their_bound_and_share() -> None:
    machine = {"read_bytes_per_s": 20e9, "matmul_flops_per_s": 100e9}
    levels = [{"concurrency": 1, "tokens_per_s": 50.0}, {"concurrency": 32, "tokens_per_s": 250.0},
              {"concurrency": 8, "tokens_per_s": 0.0}]  # fmt: skip
    bounds.annotate(levels, machine, W, 4.0)
    assert [lv["bound_tokens_per_s"] for lv in levels] == [100.0, 1000.0, 800.0]
    assert [lv["share_of_bound"] for lv in levels] == [0.5, 0.25, None]


def test_hfd_over_each_peer_per_level() -> None:
    hfd = [
        {"door": "http", "concurrency": 1, "tokens_per_s": 30.0},
        {"door": "ipc", "concurrency": 1, "tokens_per_s": 45.0},
    ]
    peer = [{"door": "llama.cpp-f32", "concurrency": 1, "tokens_per_s": 60.0},
            {"door": "llama.cpp-f32", "concurrency": 32, "tokens_per_s": 600.0}]  # fmt: skip
    assert ratios(hfd, peer, "tokens") == {
        "hfd_http_vs_llama.cpp-f32_at_1": 0.5,
        "hfd_ipc_vs_llama.cpp-f32_at_1": 0.75,
        "hfd_http_vs_llama.cpp-f32_at_32": None,  # hfd did not run that level
        "hfd_ipc_vs_llama.cpp-f32_at_32": None,
    }


def test_the_measurement_reports_bandwidth_and_peak() -> None:
    pytest.importorskip("torch", reason="the bounds are measured with torch's kernels")
    m = bounds.measure(1, size=8 << 20, matmul_n=64, repeats=1)
    assert m["threads"] == 1 and m["bytes"] == 8 << 20
    assert m["read_bytes_per_s"] > 1e8 and m["copy_bytes_per_s"] > 1e8 and m["matmul_flops_per_s"] > 1e6
    assert m["bf16_matmul_flops_per_s"] > 1e6 and (
        m["int8_matmul_ops_per_s"] is None or m["int8_matmul_ops_per_s"] > 1e6
    )


def test_the_batched_bound_is_the_peak_of_what_the_server_computes_in() -> None:
    assert [bounds.compute_kind(w, p) for w, p in [("int8", "bf16"), ("q8_0", None), ("fp32", "bf16"),
                                                    ("f32", None), ("fp32", "f32")]] == [
        "int8", "int8", "bf16", "fp32", "fp32"]  # fmt: skip
    machine = {"read_bytes_per_s": 1e12, "matmul_flops_per_s": 100e9, "bf16_matmul_flops_per_s": 300e9,
               "int8_matmul_ops_per_s": None}  # fmt: skip
    assert bounds.bound_for(machine, W, 2.0, 32, "bf16") == pytest.approx(
        3 * bounds.bound_for(machine, W, 2.0, 32)
    )
    # Not measured (None), or slower than fp32 (an emulated path): the fp32 peak stands.
    assert (
        bounds.compute_peak(machine, "int8")
        == bounds.compute_peak({**machine, "bf16_matmul_flops_per_s": 1.0}, "bf16")
        == 100e9
    )
