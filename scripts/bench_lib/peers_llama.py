"""llama.cpp's server as hfd's generation peer: built once from the llama-cpp-python sdist that
``scripts/setup --dev`` downloads (``.cache/sdist``), the bench model converted to GGUF with the
sdist's ``convert_hf_to_gguf.py`` (as ``tests/support/gguf_models.py`` does for the tests), and
started on loopback with its OpenAI-compatible endpoint."""

from __future__ import annotations

import contextlib
import fcntl
import sys
from collections.abc import Iterator
from pathlib import Path

from bench_lib.peers_proc import PEERS_CACHE, Unavailable, free_port, run_logged, server

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from support.gguf_models import LLAMA_CPP_PYTHON  # noqa: E402

BUILD_DIR = PEERS_CACHE / f"llama.cpp-{LLAMA_CPP_PYTHON}-build"
BINARY = BUILD_DIR / "bin" / "llama-server"
BUILD_LOG = PEERS_CACHE / f"llama.cpp-{LLAMA_CPP_PYTHON}-build.log"
GGUF_VERSION = 1
# Slots and context: every stream of a level gets a slot of its own, room for prompt + reply.
SLOT_CONTEXT = 512
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DGGML_NATIVE=ON",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    # No web UI: npm and the prebuilt assets' download are not to be had here, and not measured.
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
)


def source() -> Path:
    """The unpacked ``vendor/llama.cpp`` of the sdist (unpacked once, shared with the tests)."""
    import pytest
    from support.gguf_models import llama_cpp_root

    try:
        return llama_cpp_root()
    except pytest.skip.Exception as exc:  # the test helper's way of saying it is not here
        raise Unavailable(str(exc.msg)) from exc


def build(jobs: int = 2) -> Path:
    """``llama-server``, built into the peers' cache the first time (about 45 minutes on two busy
    cores, at the lowest priority); Unavailable with the log's tail when it cannot be."""
    if BINARY.is_file():
        return BINARY
    root = source()
    PEERS_CACHE.mkdir(parents=True, exist_ok=True)
    with (PEERS_CACHE / f"llama.cpp-{LLAMA_CPP_PYTHON}-build.lock").open("w") as lock:
        try:  # one build at a time: a second run does not wait hours for the first one
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Unavailable(f"llama-server is being built by another process (log {BUILD_LOG})") from None
        nice = ["nice", "-n", "19"]
        run_logged([*nice, "cmake", "-S", str(root), "-B", str(BUILD_DIR), *CMAKE_FLAGS], BUILD_LOG,
                   timeout=1800, what="llama.cpp's CMake configure")  # fmt: skip
        run_logged([*nice, "cmake", "--build", str(BUILD_DIR), "--target", "llama-server", "-j", str(jobs)],
                   BUILD_LOG, timeout=4 * 3600, what="llama.cpp's build of llama-server")  # fmt: skip
    if not BINARY.is_file():
        raise Unavailable(f"the build finished but {BINARY} is not there (log {BUILD_LOG})")
    return BINARY


def gguf(model: Path, outtype: str) -> Path:
    """``model`` (a Llama snapshot) as one GGUF file of ``outtype`` (f32, q8_0), converted once."""
    import importlib.util

    from support.gguf_models import _convert
    from support.models import _cached

    if importlib.util.find_spec("gguf") is None:
        raise Unavailable("the gguf package is not installed (the dev extra: scripts/setup --dev)")
    source()  # Unavailable when the converter cannot be had
    name = f"{model.name}-gguf-{outtype}"
    target = _cached(
        name, GGUF_VERSION, lambda out: _convert(model, outtype, out), PEERS_CACHE / f"{name}-v{GGUF_VERSION}"
    )
    found = sorted(target.glob("*.gguf"))
    if not found:
        raise Unavailable(f"{target} holds no .gguf file")
    return found[0]


def _needs_no_repack() -> bool:
    # On the AMX box llama.cpp's repacked q8_0 path dies of SIGILL (ENVIRONMENT.md).
    with contextlib.suppress(OSError):
        return "amx_tile" in Path("/proc/cpuinfo").read_text()
    return False


@contextlib.contextmanager
def serve(model_file: Path, *, threads: int, parallel: int, name: str) -> Iterator[tuple[str, int]]:
    """``llama-server`` on a free loopback port serving ``model_file`` with ``parallel`` slots
    and ``threads`` threads; yields its OpenAI base URL (``.../v1``) and its pid."""
    port = free_port()
    cmd = [
        str(build()), "--model", str(model_file), "--alias", name,
        "--host", "127.0.0.1", "--port", str(port),
        "--threads", str(threads), "--threads-batch", str(threads),
        "--parallel", str(parallel), "--ctx-size", str(parallel * SLOT_CONTEXT),
        "--cont-batching", "--no-warmup",
    ]  # fmt: skip
    if _needs_no_repack():
        cmd.append("--no-repack")
    log = PEERS_CACHE / "logs" / f"llama-server-{model_file.stem}.log"
    with server(cmd, f"http://127.0.0.1:{port}/health", log, env={"OMP_NUM_THREADS": str(threads)}) as proc:
        yield f"http://127.0.0.1:{port}/v1", proc.pid
