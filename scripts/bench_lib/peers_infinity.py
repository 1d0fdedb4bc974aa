"""Infinity as hfd's embedding peer: ``infinity-emb`` in a venv of its own under the peers'
cache (its pins are not the project's), serving the bench's embedding model on loopback with
its ONNX ("optimum") engine. Its optimum engine wants a plain ``model.onnx`` at the top of the
model folder: the folder gets hfd's own ONNX export of the model (the graph hfd's onnxruntime
engine runs), beside the model's tokenizer and sentence-transformers files."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench_lib.peers_proc import PEERS_CACHE, Unavailable, free_port, run_logged, server

VERSION = "0.0.78"
PACKAGES = (f"infinity-emb[torch,server,optimum]=={VERSION}", "torch==2.13.0")
VENV = PEERS_CACHE / f"infinity-{VERSION}-venv"
CLI = VENV / "bin" / "infinity_emb"
DONE = VENV / ".hfd-installed"
INSTALL_LOG = PEERS_CACHE / f"infinity-{VERSION}-install.log"
MODEL_DIR_VERSION = 1


def install() -> Path:
    """Infinity's command, installed into its venv the first time; Unavailable when pip fails.
    The venv is made where it lives (its scripts name their interpreter by path); a stamp file
    marks a finished install, so an interrupted one starts again."""
    if DONE.is_file() and CLI.is_file():
        return CLI
    shutil.rmtree(VENV, ignore_errors=True)
    run_logged(
        [sys.executable, "-m", "venv", str(VENV)], INSTALL_LOG, timeout=600, what="creating Infinity's venv"
    )
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--no-input", "--progress-bar", "off"]
    run_logged(
        ["nice", "-n", "19", *pip, *PACKAGES], INSTALL_LOG, timeout=3600, what="pip install of Infinity"
    )
    if not CLI.is_file():
        raise Unavailable(f"pip installed no infinity_emb command (log {INSTALL_LOG})")
    DONE.write_text(" ".join(PACKAGES) + "\n")
    return CLI


def model_dir(model: Path, cache_dir: Path, threads: int) -> Path:
    """A folder for Infinity: ``model``'s files (links) and hfd's ONNX export as ``model.onnx``."""
    from hfd.backends.base import LoadOptions
    from hfd.backends.onnx_backend import prepare_onnx

    target = PEERS_CACHE / f"{model.parent.name}-{model.name}-infinity-v{MODEL_DIR_VERSION}"
    if (target / "model.onnx").is_file():
        return target
    graph, _built = prepare_onnx(LoadOptions(path=model, task="embed", threads=threads, cache_dir=cache_dir))
    PEERS_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=PEERS_CACHE))
    try:
        for item in model.iterdir():
            if item.suffix not in (".safetensors", ".onnx", ".bin") and item.name != "onnx":
                (tmp / item.name).symlink_to(item.resolve())
        for item in graph.parent.iterdir():  # the graph and its external data file
            if item.name.startswith(graph.name):
                shutil.copy2(item, tmp / item.name)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def serve(folder: Path, *, threads: int, name: str, batch: int) -> Iterator[tuple[str, int]]:
    """Infinity on a free loopback port serving ``folder`` as ``name``; yields its base URL and
    its pid."""
    port = free_port()
    # Run in the folder, named ".": with a path, Infinity 0.0.78 asks optimum 2.x for the graph by
    # its whole path, which optimum matches against bare file names only (FileNotFoundError).
    cmd = [
        str(install()), "v2", "--model-id", ".", "--served-model-name", name,
        "--engine", "optimum", "--device", "cpu", "--batch-size", str(batch),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {
        "HF_HUB_OFFLINE": "1",
        # Where Infinity keeps the graph it optimises, per model: every model here is named ".".
        "HF_HOME": str(PEERS_CACHE / "infinity-hf-home" / folder.name),
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
        "OMP_NUM_THREADS": str(threads),
    }
    log = PEERS_CACHE / "logs" / f"infinity-{folder.name}.log"
    with server(cmd, f"http://127.0.0.1:{port}/health", log, env=env, cwd=folder) as proc:
        yield f"http://127.0.0.1:{port}", proc.pid
