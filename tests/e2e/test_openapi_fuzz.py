"""A schema-based fuzzer (schemathesis) against a real ``hfd serve`` on the fake engine, over
the document the daemon serves at ``/openapi.json``: whatever it sends, no 5xx, and every
reply has a documented status, a documented media type and a body matching the documented
schema (errors included).

The bodies it generates name random models; a third of them are rewritten to name the
daemon's real chat and embedding models, so the generation and embedding paths run with
fuzzed parameters too (the fake engine answers in milliseconds).

Not fuzzed, and why: ``/api/pull`` (it fetches from the network: with the Hub off every
reference fails the same way, so it tests nothing; ``tests/e2e/test_doors_admin.py`` covers
it against a local Hub) and the routes that change or remove what the store holds
(``/api/delete``, ``/api/copy``, ``/api/push``, any DELETE): destructive by design. The
schema's own ``/openapi.json`` and the page's files are static.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.daemon import Daemon
from support.web_daemon import CHAT, EMBED, start_fake_daemon

from hfd.daemon.operations import OPERATIONS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NOT_FUZZED = ("/api/pull", "/api/delete", "/api/copy", "/api/push", "/openapi.json", "/web/")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Per route. Generating a case from a large request schema (Anthropic's messages, chat) takes
# tens of milliseconds to a second on a 2-core box, and the table has ~35 routes: 12 keeps the
# whole test near a minute there. HFD_FUZZ_EXAMPLES=50 runs a deeper search.
MAX_EXAMPLES = int(os.environ.get("HFD_FUZZ_EXAMPLES", "12"))

# One test per route of the table (read at collection, so rows added later are fuzzed too).
ROUTES = sorted(
    {
        (method, re.sub(r"\{(\w+):\w+\}", r"{\1}", path))
        for op in OPERATIONS
        for method, path in op.http
        if method != "DELETE" and not path.startswith(NOT_FUZZED)
    }
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_fake_daemon(tmp_path_factory.mktemp("fuzz"), args=("--cache-enabled", "false"))
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def api(daemon: Daemon) -> Any:
    doc = httpx.get(daemon.http + "/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(doc)


def _real_models(case: Any) -> Any:
    """Some bodies name a model the daemon has, so the fuzzed fields reach the engine."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        return st.sampled_from([None, CHAT, EMBED]).map(lambda m: _with_model(case, m))
    return st.just(case)


def _with_model(case: Any, model: str | None) -> Any:
    if model is not None:
        case.body = {**case.body, "model": model}
    return case


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_no_5xx_and_every_reply_is_documented(api: Any, daemon: Daemon, method: str, path: str) -> None:
    operation = api[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE).flatmap(_real_models),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        phases=[Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same cases every run
        database=None,
    )
    @given(case=cases)
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=daemon.http, checks=CHECKS, timeout=30)

    fuzz()
