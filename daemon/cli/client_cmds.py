"""Commands that talk to a running daemon over its IPC socket: ps, embed, run, load, tune, unload
(``run`` without a prompt: the interactive chat of ``hfd.daemon.cli.chat``).

They use ``hfd.client`` like any other application does, at the endpoint the settings give
(``--ipc-path``/``--runtime-dir``/``HFD_IPC_PATH``, as for ``hfd serve``). Every failure is one
line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from hfd._units import format_bytes
from hfd.client import Client
from hfd.client.errors import HfdError, InvalidRequest
from hfd.client.types import RunningModel
from hfd.daemon.settings import Settings

# Loading a large model on first use can take minutes; a stream waits this long per chunk.
DEFAULT_TIMEOUT = 600.0
EMBED_PREVIEW = 6

Handler = Callable[[argparse.Namespace, Settings], int]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("ps", help="list the models the daemon has loaded")
    _common(p)
    p.set_defaults(handler=_guard(cmd_ps))

    p = sub.add_parser("embed", help="embed texts with a model of the running daemon")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument(
        "-m", dest="embed_model", metavar="MODEL", help="the embedding model (default: the first one served)"
    )
    p.add_argument("--json", dest="as_json", action="store_true", help="print every vector as JSON")
    _common(p)
    p.set_defaults(handler=_guard(cmd_embed))

    p = sub.add_parser(
        "run",
        help="chat with a model; the reply streams to the terminal (no PROMPT: an interactive chat)",
    )
    p.add_argument("run_model", metavar="MODEL")
    p.add_argument("prompt", metavar="PROMPT", nargs="?", help="one message; without it, chat until /bye")
    p.add_argument("--system", help="a system message to put first")
    p.add_argument("--max-tokens", type=int, help="most tokens to generate")
    p.add_argument("--temperature", type=float, help="sampling temperature (0: greedy)")
    p.add_argument("--seed", type=int, help="sampling seed, for repeatable output")
    _common(p)
    p.set_defaults(handler=_guard(cmd_run))

    p = sub.add_parser("load", help="load a model now (instead of on first use)")
    p.add_argument("load_model", metavar="MODEL")
    p.add_argument(
        "--keep-alive",
        dest="load_keep_alive",
        metavar="DURATION",
        help="how long it stays loaded when idle: seconds or 30s, 5m, 1h; -1 keeps it loaded",
    )
    _common(p)
    p.set_defaults(handler=_guard(cmd_load))

    p = sub.add_parser(
        "tune",
        help="measure a model's candidate engines on this machine now; its loads then use the fastest",
    )
    p.add_argument("tune_model", metavar="MODEL")
    p.add_argument("--json", dest="as_json", action="store_true", help="print the figures as JSON")
    _common(p)
    p.set_defaults(handler=_guard(cmd_tune))

    p = sub.add_parser("unload", help="unload a model now")
    p.add_argument("unload_model", metavar="MODEL")
    _common(p)
    p.set_defaults(handler=_guard(cmd_unload))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the daemon")


def _guard(handler: Handler) -> Handler:
    """Turn every error into one line on stderr and status 1."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return handler(args, settings)
        except HfdError as exc:
            print(f"hfd: {exc.message}", file=sys.stderr)
            return 1
        except BrokenPipeError:  # `hfd embed ... | head`
            return 0

    run.__name__ = handler.__name__
    return run


def _client(args: argparse.Namespace, settings: Settings) -> Client:
    return Client(settings.ipc_endpoint(), timeout=args.timeout)


# ----------------------------------------------------------------------------- formatting


def human_duration(seconds: float) -> str:
    whole = round(seconds)  # rounded first, or 299.97 s would read "4m60s"
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def expires(model: RunningModel) -> str:
    if model.in_use:
        return "in use"
    if model.keep_alive is not None and model.keep_alive < 0:
        return "never"
    if model.expires_in is None:
        return "-"
    return f"in {human_duration(model.expires_in)}"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def estimate(model: RunningModel) -> str:
    """What the daemon expected the model to need (and reserved for it) before loading it."""
    if model.memory_estimate and model.memory_estimate.get("total"):
        return format_bytes(model.memory_estimate["total"])
    if model.memory_reserved_bytes:
        return format_bytes(model.memory_reserved_bytes)
    return "-"


def breaker(model: RunningModel) -> str:
    """The circuit breaker's state; an open one says when it lets a request try again."""
    state = model.breaker_state
    if state != "open":
        return state
    engines = model.breaker.get("engines") or {}
    waits = [float(e.get("retry_after") or 0.0) for e in engines.values() if e.get("state") == "open"]
    return f"open ({human_duration(max(waits))})" if waits else state


PS_COLUMNS: Final = (
    "NAME",
    "TASK",
    "ENGINE",
    "DEVICE",
    "PRECISION",
    "MEMORY",
    "ESTIMATE",
    "KV CACHE",
    "BREAKER",
    "IN USE",
    "EXPIRES",
)


def ps_table(models: Sequence[RunningModel]) -> str:
    rows = [list(PS_COLUMNS)]
    notes = []
    for m in models:
        rows.append(
            [
                m.name,
                m.task,
                m.engine,
                m.device,
                precision(m),
                format_bytes(m.memory_bytes),
                estimate(m),
                kv_cache(m),
                breaker(m),
                str(m.in_use),
                expires(m) if m.state == "ready" else loading_state(m),
            ]
        )
        # Notes start "name:", so a script reading the table by its first column never takes one for a row.
        if m.engine_reason:  # measured here, or the static order
            notes.append(f"{m.name}: on {m.engine}, {m.engine_reason}")
        if m.preferred_engine and m.preferred_engine != m.engine:
            notes.append(
                f"{m.name}: {m.engine} serves, {m.preferred_engine} preferred: {m.fallback_reason or 'unknown'}"
            )
    return table(rows) + "".join(f"\n{note}" for note in notes)


def loading_state(model: RunningModel) -> str:
    """A model still loading: its phase, how long its load has run, a percent where known."""
    percent = "" if model.percent is None else f" {model.percent:.0f}%"
    return f"{model.state} {human_duration(model.elapsed_seconds or 0.0)}{percent}"


def kv_cache(model: RunningModel) -> str:
    """The KV cache cap of an engine that plans its own (OpenVINO); "-" for the others."""
    planned = (model.kv_cache or {}).get("planned_bytes")
    return format_bytes(int(planned)) if planned else "-"


def precision(model: RunningModel) -> str:
    """Compute precision, and the weight format when it differs ("bf16 (fp32 weights)")."""
    if not model.precision:
        return "-"
    weights = model.weight_format
    if weights and weights.replace("fp", "f") != model.precision:
        return f"{model.precision} ({weights} weights)"
    return model.precision


# ----------------------------------------------------------------------------- commands


def cmd_ps(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        models = client.ps()
    if not models:
        print("no models loaded")
        return 0
    print(ps_table(models))
    return 0


def cmd_embed(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        model = args.embed_model or _default_embed_model(client)
        result = client.embeddings.create(model=model, input=list(args.texts))
    if args.as_json:
        data = [{"index": e.index, "embedding": [float(x) for x in e.embedding]} for e in result.data]
        print(json.dumps({"model": result.model, "data": data}))
        return 0
    for text, item in zip(args.texts, result.data, strict=True):
        values = " ".join(f"{float(x):+.4f}" for x in item.embedding[:EMBED_PREVIEW])
        print(f"{item.index}: dims={len(item.embedding)} [{values} ...]  {_shorten(text)}")
    return 0


def _default_embed_model(client: Client) -> str:
    models = client.models.list().data
    for m in models:
        if m.task == "embed":
            return m.id
    raise InvalidRequest("no embedding model is known to be served here; name one with -m MODEL")


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if args.prompt is None:
        return _chat(args, settings)
    messages = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": args.prompt})
    with _client(args, settings) as client:
        stream = client.chat.completions.create(
            model=args.run_model,
            messages=messages,
            stream=True,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            seed=args.seed,
        )
        try:
            for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        sys.stdout.write(choice.delta.content)
                        sys.stdout.flush()
        except KeyboardInterrupt:
            stream.close()  # cancels the generation in the daemon
            sys.stdout.write("\n")
            return 130
        finally:
            stream.close()
    sys.stdout.write("\n")
    return 0


def _chat(args: argparse.Namespace, settings: Settings) -> int:
    from hfd.daemon.cli.chat import Session, ensure_model

    options = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed}
    with _client(args, settings) as client:
        ensure_model(client, args.run_model, lambda line: print(line, file=sys.stderr))
        return Session(client, args.run_model, system=args.system, options=options).run()


def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        m = client.load(args.load_model, keep_alive=_duration(args.load_keep_alive))
    print(
        f"loaded {m.name}: {m.task} on {m.engine}/{m.device}, {format_bytes(m.memory_bytes)}, "
        f"in {m.load_seconds:.1f}s; {_kept(m)}"
    )
    return 0


def cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    from hfd.daemon.models.engine_choice import describe

    with _client(args, settings) as client:
        result = client.tune(args.tune_model)
    if args.as_json:
        print(json.dumps(result))
    elif result.get("measured"):
        print(f"{args.tune_model}: {describe(result)}")
    else:
        print(f"{args.tune_model}: not measured: {result.get('reason')}")
    return 0


def _duration(text: str | None) -> float | str | None:
    """A number of seconds as a number; a duration ("5m") as given (the daemon parses it and
    answers a bad one with a validation error naming keep_alive)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _kept(m: RunningModel) -> str:
    if m.keep_alive is not None and m.keep_alive < 0:
        return "stays loaded"
    if m.keep_alive is None:
        return "kept as the daemon's default"
    return f"unloads after {human_duration(m.keep_alive)} idle"


def cmd_unload(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        unloaded = client.unload(args.unload_model)
    print(f"unloaded {args.unload_model}" if unloaded else f"{args.unload_model} was not loaded")
    return 0
