"""A pull killed with SIGKILL mid-download leaves a consistent store; the next pull resumes and the model loads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.hub_server import HubRepo, HubServer
from support.store_env import store_settings

from hfd.daemon.store.model_store import ModelStore

REPO = "acme/wide-bert"


def _wide_bert(out: Path) -> Path:
    """A small BERT with a big vocabulary: ~20 MB of weights, more than huggingface_hub's 10 MB
    write chunk, so a download killed mid-file leaves bytes to resume from."""
    from transformers import BertConfig, BertModel

    shape = {
        "vocab_size": 40_000,
        "hidden_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 256,
    }
    BertModel(BertConfig.from_dict(shape)).save_pretrained(out)
    return out


def _pull_cmd(state: Path, hub: HubServer) -> list[str]:
    return [
        sys.executable, "-m", "hfd", "pull", REPO,
        "--state-dir", str(state),
        "--hub-endpoint", hub.url,
        "--hub-offline", "false",
        "--ipfs-enabled", "false",
        "--store-use-hf-cache", "false",
        "--log-format", "json",
    ]  # fmt: skip


def test_sigkill_mid_pull_then_pull_again(tmp_path: Path) -> None:
    from transformers import AutoModel

    state = tmp_path / "state"
    env = dict(os.environ, HF_HUB_OFFLINE="0")
    with HubServer([HubRepo.from_dir(REPO, _wide_bert(tmp_path / "model"))]) as hub:
        repo = hub.repos[REPO]
        weights = repo.etag("model.safetensors")
        partial = state / "models" / "models--acme--wide-bert" / "blobs" / f"{weights}.incomplete"
        hub.rate = 4_000_000  # bytes/s: the weights take seconds, so the kill lands mid-file
        proc = subprocess.Popen(
            _pull_cmd(state, hub), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 120
            while not (partial.exists() and partial.stat().st_size > 0):
                assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
                assert time.monotonic() < deadline, "the pull never got to the weights"
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)  # waits, and closes the pipes
        assert proc.returncode == -signal.SIGKILL

        # Consistent after the crash: no snapshot, no ref, no catalog row, only the partial blob.
        store = ModelStore(store_settings(tmp_path, hub_offline=False, hub_endpoint=hub.url))
        repo_dir = store.layout.repo(REPO)
        assert repo_dir.commits() == [] and repo_dir.refs_map() == {}
        assert store.find(REPO) is None and store.catalog.snapshots() == []
        kept = partial.stat().st_size
        assert 0 < kept < len(repo.files["model.safetensors"])

        # The second pull resumes where the first stopped and verifies the whole file.
        hub.rate = None
        again = subprocess.run(_pull_cmd(state, hub), env=env, capture_output=True, timeout=300)
        assert again.returncode == 0, again.stderr.decode()[-2000:]
        assert f"bytes={kept}-" in hub.ranges
    path = Path(again.stdout.decode().strip().splitlines()[-1])
    assert path == repo_dir.snapshot(repo.commit)
    assert not partial.exists() and repo_dir.incomplete() == []
    AutoModel.from_pretrained(path, local_files_only=True)
    row = store.catalog.snapshot(REPO, repo.commit)
    assert row is not None and row.source == "hub" and row.file_count == len(repo.files)


def test_crash_while_linking_leaves_no_snapshot(tmp_path: Path) -> None:
    """Linking builds the snapshot under a staging name and renames it: a half-linked snapshot never shows."""
    store = ModelStore(store_settings(tmp_path))
    repo_dir = store.layout.repo(REPO)
    staging = repo_dir.snapshots / (".staging-" + "a" * 40 + "-dead")
    (staging / "sub").mkdir(parents=True)
    os.symlink("../../blobs/x", staging / "config.json")
    assert store.find(REPO) is None and repo_dir.commits() == []
    with store.repo_lock(REPO):
        pass
    assert not staging.exists()  # cleaned by the next writer
