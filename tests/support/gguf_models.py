"""GGUF snapshots for tests: the tiny Llama converted by llama.cpp's ``convert_hf_to_gguf.py``.

The converter is not on PyPI as a module: it ships in the llama-cpp-python sdist
(``vendor/llama.cpp``), which ``scripts/setup --dev`` downloads into ``.cache/sdist`` (or set
``HFD_LLAMA_CPP`` to an unpacked llama.cpp checkout). It needs the PyPI ``gguf`` package (the dev
extra). Where either is missing a test skips, saying which. The built directory holds the GGUF
plus the snapshot's config, tokenizer and generation files, and no safetensors; it is cached like
``support.models``' builds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from support.models import CACHE_ROOT, REPO_ROOT, TINY_LLAMA_VERSION, _cached, tiny_llama

LLAMA_CPP_PYTHON = "0.3.36"
SDIST = REPO_ROOT / ".cache" / "sdist" / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
TINY_LLAMA_GGUF_VERSION = 1

# The tiny BPE tokenizer's pre-tokenizer hash is unknown to the converter: it gets the default one.
_CONVERT = """
import runpy, sys
root = sys.argv.pop(1)
sys.path.insert(0, root)
from conversion import base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "default"
# A Llama with a WordPiece vocabulary (the bench Llama's) gets llama.cpp's "bert" vocabulary.
import json, pathlib
tok = pathlib.Path(sys.argv[1]) / "tokenizer.json"
if tok.is_file() and json.loads(tok.read_text()).get("model", {}).get("type") == "WordPiece":
    from conversion import bert, llama
    llama.LlamaModel.set_vocab = bert.BertModel.set_vocab
sys.argv[0] = root + "/convert_hf_to_gguf.py"
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _skip(why: str) -> None:
    import pytest

    pytest.skip(f"cannot build a GGUF test model: {why}")


def llama_cpp_root() -> Path:
    """An unpacked llama.cpp holding ``convert_hf_to_gguf.py``, unpacking the sdist once."""
    given = os.environ.get("HFD_LLAMA_CPP")
    if given:
        root = Path(given)
        if not (root / "convert_hf_to_gguf.py").is_file():
            _skip(f"HFD_LLAMA_CPP={given} has no convert_hf_to_gguf.py")
        return root
    unpacked = CACHE_ROOT / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    if (unpacked / "convert_hf_to_gguf.py").is_file():
        return unpacked
    if not SDIST.is_file():
        _skip(
            f"{SDIST} is missing (scripts/setup --dev downloads it: pip download --no-deps "
            f"--no-binary :all: llama-cpp-python=={LLAMA_CPP_PYTHON} -d .cache/sdist)"
        )
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".llama.cpp-", dir=CACHE_ROOT))
    try:
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
        with tarfile.open(SDIST) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
            tar.extractall(tmp, members=members, filter="data")
        with contextlib.suppress(OSError):  # another process unpacked it first: keep theirs
            os.rename(tmp / prefix, unpacked)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not (unpacked / "convert_hf_to_gguf.py").is_file():
        raise RuntimeError(f"{SDIST} did not unpack a convert_hf_to_gguf.py into {unpacked}")
    return unpacked


def tiny_llama_gguf(outtype: str = "f16") -> Path:
    """The tiny Llama (``support.models.tiny_llama``) as one GGUF file of ``outtype`` (f16, q8_0)
    with its tokenizer and config files beside it."""
    name = f"tiny-llama-gguf-{outtype}-{TINY_LLAMA_VERSION}"
    target = CACHE_ROOT / f"{name}-v{TINY_LLAMA_GGUF_VERSION}"
    if not (target / "config.json").exists():
        if importlib.util.find_spec("gguf") is None:
            _skip("the gguf package is not installed (the dev extra)")
        llama_cpp_root()  # skips when the converter cannot be had
    return _cached(name, TINY_LLAMA_GGUF_VERSION, lambda out: _convert(tiny_llama(), outtype, out), None)


def _convert(source: Path, outtype: str, out: Path) -> None:
    gguf_file = out / f"{source.name.rsplit('-v', 1)[0]}-{outtype.upper()}.gguf"
    run = subprocess.run(
        [sys.executable, "-c", _CONVERT, str(llama_cpp_root()), str(source), "--outtype", outtype,
         "--outfile", str(gguf_file)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{run.stderr[-4000:]}")
    for item in source.iterdir():
        if item.is_file() and item.suffix != ".safetensors":
            shutil.copy2(item, out / item.name)


def tiny_llama_gguf_alone(outtype: str = "f16") -> Path:
    """The tiny Llama's GGUF file alone in a directory, as most GGUF repositories on the Hub are:
    no config.json, no tokenizer files (the file's metadata carries both)."""
    source = tiny_llama_gguf(outtype)
    gguf_file = next(source.glob("*.gguf"))
    target = CACHE_ROOT / f"{source.name}-alone"
    if (target / gguf_file.name).is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=CACHE_ROOT))
    try:
        shutil.copy2(gguf_file, tmp / gguf_file.name)
        with contextlib.suppress(OSError):  # another process finished first: keep theirs
            os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_llama_greedy_text(prompt: str, tokens: int) -> str:
    """transformers' greedy completion of ``prompt`` (``tokens`` new tokens, eos ignored) on the
    original tiny Llama snapshot, decoded: what a GGUF of it served by hfd should answer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama())
    model = AutoModelForCausalLM.from_pretrained(tiny_llama(), dtype=torch.float32).eval()
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        seq = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return str(tokenizer.decode(seq[0, ids.shape[1] :], skip_special_tokens=True))
