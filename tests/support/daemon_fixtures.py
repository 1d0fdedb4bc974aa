"""A test module's own ``hfd serve``: the module-scoped ``daemon`` fixture, declared in one line.

    daemon = module_daemon({"emb": tiny_bert}, engine="torch", batching={"max_input_bytes": 4096})

Each model is built (by its builder, cached as the builders cache) when the fixture is first set
up, not at import; the daemon runs for the module's tests and must stop cleanly afterwards
(``running_daemon``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from support.daemon import Daemon, running_daemon


def module_daemon(
    models: Mapping[str, Callable[[], Path]],
    *,
    engine: str | None = None,
    batching: Mapping[str, float] | None = None,
    args: Iterable[str] = (),
    workdir: str = "daemon",
) -> Any:
    """A module-scoped fixture named ``daemon``: ``hfd serve`` with each model built by its
    builder, under a fresh temporary ``workdir``; ``engine`` pins the engine (``--engine``),
    ``batching`` sets keys of the config's ``[batching]`` table, ``args`` go on the command line."""
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in (batching or {}).items())
    argv = [*(["--engine", engine] if engine else []), *args]

    @pytest.fixture(scope="module")
    def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
        built: dict[str, Path | str] = {name: build() for name, build in models.items()}
        config = f"[batching]\n{extra}" if extra else ""
        with running_daemon(tmp_path_factory.mktemp(workdir), built, extra_config=config, args=argv) as d:
            yield d

    return daemon
