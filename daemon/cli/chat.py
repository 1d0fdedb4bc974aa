"""``hfd run MODEL`` with no prompt: an interactive chat, as ``ollama run`` has.

Each turn is sent with the whole conversation so far (``/clear`` forgets it), and the reply
streams to the terminal. Input is a line, or several between ``\"\"\"`` marks; ``/bye`` (or
end of input, Ctrl-D) leaves. Ctrl-C stops a reply being written (the daemon cancels the
generation) and keeps the session; the interrupted reply is not kept in the history.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from hfd.client import Client
from hfd.client.types import PullProgress

PROMPT = ">>> "
CONTINUE = "... "
FENCE = '"""'
HELP = """Available commands:
  /clear   forget the conversation so far
  /bye     exit
  /?       this help

Use \"\"\" to begin and end a message of several lines."""


class Session:
    def __init__(
        self,
        client: Client,
        model: str,
        *,
        system: str | None = None,
        options: dict[str, Any] | None = None,
        stdin: TextIO = sys.stdin,
        stdout: TextIO = sys.stdout,
    ) -> None:
        self.client = client
        self.model = model
        self.system = system
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        self.stdin = stdin
        self.stdout = stdout
        self.interactive = stdin.isatty()
        self.history: list[dict[str, str]] = []
        self.clear()

    def clear(self) -> None:
        self.history = [{"role": "system", "content": self.system}] if self.system else []

    def _read(self, prompt: str) -> str | None:
        """One line without its newline; None at end of input."""
        if self.interactive:
            try:
                return input(prompt)  # readline editing and history on a terminal
            except EOFError:
                return None
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    def read_message(self) -> str | None:
        line = self._read(PROMPT)
        if line is None:
            return None
        if not line.lstrip().startswith(FENCE):
            return line
        text = line.lstrip()[len(FENCE) :]
        if text.rstrip().endswith(FENCE) and text.strip():
            return text.rstrip()[: -len(FENCE)]
        lines = [text] if text else []
        while True:
            more = self._read(CONTINUE)
            if more is None:
                break
            if more.rstrip().endswith(FENCE):
                lines.append(more.rstrip()[: -len(FENCE)])
                break
            lines.append(more)
        return "\n".join(lines).strip("\n")

    def run(self) -> int:
        while True:
            try:
                message = self.read_message()
            except KeyboardInterrupt:
                self.stdout.write("\nUse Ctrl + d or /bye to exit.\n")
                continue
            if message is None:
                self.stdout.write("\n" if self.interactive else "")
                return 0
            command = message.strip()
            if not command:
                continue
            if command in ("/bye", "/exit"):
                return 0
            if command == "/clear":
                self.clear()
                self.stdout.write("Cleared session context\n")
                continue
            if command in ("/?", "/help"):
                self.stdout.write(HELP + "\n")
                continue
            if command.startswith("/") and " " not in command:
                self.stdout.write(f"Unknown command '{command}'. Type /? for help\n")
                continue
            self.turn(message)

    def turn(self, message: str) -> None:
        self.history.append({"role": "user", "content": message})
        stream = self.client.chat.completions.create(
            model=self.model, messages=list(self.history), stream=True, **self.options
        )
        parts: list[str] = []
        try:
            for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                        self.stdout.write(choice.delta.content)
                        self.stdout.flush()
        except KeyboardInterrupt:
            stream.close()  # cancels the generation in the daemon
            self.history.pop()
            self.stdout.write("\n\n")
            return
        finally:
            stream.close()
        self.history.append({"role": "assistant", "content": "".join(parts)})
        self.stdout.write("\n\n")


def ensure_model(client: Client, model: str, report: Callable[[str], None]) -> None:
    """Pull ``model`` through the daemon first when it is not a model the daemon names: a store
    reference not in the store yet is fetched (with progress on ``report``); one already there
    answers at once."""
    if model in {m.id for m in client.models.list().data}:
        return
    last = [""]

    def progress(event: PullProgress) -> None:
        if event.status == "downloading" and event.total:
            line = f"pulling {model}: {100 * event.completed // event.total}%"
        else:
            line = f"pulling {model}: {event.status}"
        if line != last[0]:
            last[0] = line
            report(line)

    client.pull(model, progress=progress)
