"""``hfd completion bash|zsh|fish``: the scripts come from the parser, and bash's completes
commands, actions and options when a real bash runs it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from hfd.daemon.cli import build_parser, main
from hfd.daemon.cli.completion import script


def _complete(words: list[str]) -> set[str]:
    source = script("bash", build_parser())
    cword = len(words) - 1
    array = " ".join(f"'{w}'" for w in words)
    program = f'{source}\nCOMP_WORDS=({array}); COMP_CWORD={cword}; _hfd; printf "%s\\n" "${{COMPREPLY[@]}}"'
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30, check=True)
    return set(out.stdout.split())


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_commands_actions_and_options() -> None:
    assert {"ps", "pull", "publish"} <= _complete(["hfd", "p"])
    assert _complete(["hfd", "keys", "c"]) == {"create", "curve"}
    assert "--rpm" in _complete(["hfd", "keys", "create", "--"])
    ps = _complete(["hfd", "ps", "--"])
    assert "--ipc-path" in ps and "--http-port" not in ps
    assert "--http-port" in _complete(["hfd", "serve", "--http"])


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_every_shell_gets_a_script(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    out = capsys.readouterr().out
    assert "hfd" in out and "keys" in out and "completion" in out
    if shell == "fish":
        assert "complete -c hfd -n __fish_use_subcommand -a ps" in out
    if shell == "zsh":
        assert "bashcompinit" in out and "complete -o default -F _hfd hfd" in out
    exe = shutil.which(shell)
    if exe is not None and shell != "fish":
        subprocess.run([exe, "-n", "-c", out], check=True, timeout=30)  # parses
