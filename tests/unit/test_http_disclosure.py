"""The HTTP door's last line of defence: whatever an error was built from, the client reads no
path of this machine, no engine binding's signature dump, and for a 5xx no foreign exception's
text; the log keeps the original."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hfd.client.errors import HfdError, InvalidRequest, ModelNotFound, ModelUnavailable
from hfd.daemon.http.errors import error_body, sse_error_event

PYBIND = (
    "__init__(): incompatible function arguments. The following argument types are supported:\n"
    "    1. (self: openvino_genai.py_openvino_genai.GenerationConfig, rng_seed: int) -> None\n\n"
    "Invoked with: <GenerationConfig>, -1"
)


def raised(err: HfdError, cause: BaseException) -> HfdError:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise err from exc
    except HfdError as caught:
        return caught


def message(err: HfdError) -> str:
    return str(error_body(err)["error"]["message"])


def test_a_binding_signature_dump_never_reaches_the_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    err = raised(InvalidRequest(f"invalid seed: {PYBIND}", param="seed"), TypeError(PYBIND))
    text = message(err)
    assert "argument types" not in text and "openvino_genai" not in text and "Invoked with" not in text
    assert text.startswith("invalid seed")
    assert error_body(err)["error"]["code"] == "invalid_request"
    withheld = [r for r in caplog.records if r.getMessage() == "error message withheld from the client"]
    assert withheld and "openvino_genai" in withheld[0].error  # type: ignore[attr-defined]


def test_paths_of_this_machine_are_hidden_in_messages_and_details(tmp_path: Path) -> None:
    hf = tmp_path / "hub" / "models--org--name"
    err = ModelNotFound(
        f"model 'org/name' is not in {hf} nor in /root/.cache/huggingface",
        param="model",
        details={"looked_in": [str(hf)], "state": str(tmp_path)},
    )
    body = error_body(err)["error"]
    assert str(tmp_path) not in str(body) and "/root/" not in str(body)
    assert "model 'org/name'" in body["message"]
    # URL paths and model names are no filesystem paths.
    assert message(ModelNotFound("no route GET /v1/foo/bar")) == "no route GET /v1/foo/bar"


def test_a_5xx_built_from_a_foreign_exception_does_not_repeat_its_text() -> None:
    cause = RuntimeError(
        "Exception from src/inference/src/cpp/core.cpp:112: [CPU] Unsupported op Foo in node 17"
    )
    err = raised(ModelUnavailable(f"model 'm' cannot be loaded: {cause}", retry_after=5), cause)
    text = message(err)
    assert "core.cpp" not in text and "Unsupported op" not in text
    assert text.startswith("model 'm' cannot be loaded") and "log" in text
    # The same holds for an error sent as the last event of a stream.
    assert b"core.cpp" not in sse_error_event(err)
    # Quoted in part (a truncated or first-line excerpt) is no better.
    long = RuntimeError("Check 'prompt_ids.size() > 0' failed at src/cpp/src/llm_pipeline.cpp:88\nstack: ...")
    cut = raised(ModelUnavailable(f"generation failed: {str(long)[:60]}..."), long)
    assert "llm_pipeline" not in message(cut) and message(cut).startswith("generation failed: ")
    # A 4xx's own words stay as they are.
    four = raised(
        InvalidRequest("temperature must be at most 2"), ValueError("temperature must be at most 2")
    )
    assert message(four) == "temperature must be at most 2"
