"""``hfd completion bash|zsh|fish``: a shell completion script, generated from the argument
parser itself, so it always lists the commands and options this ``hfd`` has.

A small generator rather than a dependency: shtab (the maintained argparse generator) writes
bash and zsh but not fish, and what ``hfd`` needs is only commands, their actions (``keys
create``) and option names, with files completed for everything else. zsh runs the bash
function through ``bashcompinit``, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

SHELLS = ("bash", "zsh", "fish")


@dataclass
class Command:
    name: str
    help: str = ""
    options: list[tuple[str, str]] = field(default_factory=list)  # (--flag, help)
    actions: list[Command] = field(default_factory=list)


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _command(name: str, parser: argparse.ArgumentParser, help: str) -> Command:
    cmd = Command(name, help)
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        for flag in action.option_strings:
            if flag.startswith("--"):
                cmd.options.append((flag, (action.help or "").split(".")[0][:60]))
    sub = _subparsers(parser)
    if sub is not None:
        helps = {a.dest: a.help or "" for a in sub._choices_actions}
        for child, child_parser in sub.choices.items():
            cmd.actions.append(_command(child, child_parser, helps.get(child, "")))
    return cmd


def tree(parser: argparse.ArgumentParser) -> Command:
    return _command("hfd", parser, "")


def bash(root: Command) -> str:
    cases = []
    for cmd in root.actions:
        opts = " ".join(f for f, _ in cmd.options)
        if cmd.actions:
            inner = "\n".join(
                f"                {a.name}) words={shlex.quote(' '.join(f for f, _ in a.options))} ;;"
                for a in cmd.actions
            )
            names = " ".join(a.name for a in cmd.actions)
            cases.append(
                f"        {cmd.name})\n"
                f"            if [[ $COMP_CWORD -eq 2 ]]; then words={shlex.quote(names)}\n"
                f'            else case "${{COMP_WORDS[2]}}" in\n{inner}\n            esac; fi ;;'
            )
        else:
            cases.append(f"        {cmd.name}) words={shlex.quote(opts)} ;;")
    commands = " ".join(c.name for c in root.actions)
    return (
        '# hfd completion for bash: eval "$(hfd completion bash)"\n'
        "_hfd() {\n"
        '    local cur="${COMP_WORDS[COMP_CWORD]}" words=""\n'
        "    if [[ $COMP_CWORD -eq 1 ]]; then\n"
        f"        words={shlex.quote(commands + ' --help --version')}\n"
        "    else\n"
        '        case "${COMP_WORDS[1]}" in\n' + "\n".join(cases) + "\n        esac\n"
        "    fi\n"
        '    COMPREPLY=($(compgen -W "$words" -- "$cur"))\n'
        "}\n"
        "complete -o default -F _hfd hfd\n"
    )


def zsh(root: Command) -> str:
    return (
        '# hfd completion for zsh: eval "$(hfd completion zsh)"\n'
        "autoload -U +X compinit && compinit\n"
        "autoload -U +X bashcompinit && bashcompinit\n" + bash(root).split("\n", 1)[1]
    )


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish(root: Command) -> str:
    lines = ["# hfd completion for fish: hfd completion fish | source"]
    for cmd in root.actions:
        lines.append(f"complete -c hfd -n __fish_use_subcommand -a {cmd.name} -d {_fish_quote(cmd.help)}")
        if cmd.actions:
            names = " ".join(a.name for a in cmd.actions)
            for a in cmd.actions:
                lines.append(
                    f"complete -c hfd -n '__fish_seen_subcommand_from {cmd.name}; and not "
                    f"__fish_seen_subcommand_from {names}' -a {a.name} -d {_fish_quote(a.help)}"
                )
                for flag, help in a.options:
                    lines.append(
                        f"complete -c hfd -n '__fish_seen_subcommand_from {cmd.name}; and "
                        f"__fish_seen_subcommand_from {a.name}' -l {flag[2:]} -d {_fish_quote(help)}"
                    )
        for flag, help in cmd.options:
            lines.append(
                f"complete -c hfd -n '__fish_seen_subcommand_from {cmd.name}' -l {flag[2:]} -d {_fish_quote(help)}"
            )
    return "\n".join(lines) + "\n"


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    return {"bash": bash, "zsh": zsh, "fish": fish}[shell](tree(parser))


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh or fish)")
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(handler=_completion)


def _completion(args: argparse.Namespace, settings: Any) -> int:
    from hfd.daemon.cli import build_parser

    sys.stdout.write(script(args.shell, build_parser()))
    return 0
