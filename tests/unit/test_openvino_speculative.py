"""The OpenVINO engine's ``speculative`` and ``draft_model`` model options: off by default,
prompt lookup with bounded tuning options, a draft model from the directory the model manager
resolved, anything else refused naming the option (no engine needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hfd.backends.base import LoadOptions
from hfd.backends.openvino_speculative import DraftModel, PromptLookup, speculative_plan, warm_up_fields
from hfd.client.errors import InvalidRequest


def _opts(**extra: Any) -> LoadOptions:
    return LoadOptions(path=Path("/nonexistent"), task="generate", extra=extra)


def test_off_by_default_and_when_asked() -> None:
    for extra in (
        {},
        {"speculative": "off"},
        {"speculative": "none"},
        {"speculative": False},
        {"speculative": ""},
    ):
        assert speculative_plan(_opts(**extra)) is None


def test_prompt_lookup_fields_and_properties() -> None:
    plan = speculative_plan(_opts(speculative=" Prompt-Lookup ", lookup_tokens="7", lookup_ngram=2))
    assert plan == PromptLookup(num_assistant_tokens=7, max_ngram_size=2)
    assert plan.fields() == {"num_assistant_tokens": 7, "max_ngram_size": 2}
    assert plan.properties({"INFERENCE_NUM_THREADS": 2}) == {
        "INFERENCE_NUM_THREADS": 2,
        "prompt_lookup": True,
    }
    assert warm_up_fields(plan.properties({})) == PromptLookup().fields()
    assert warm_up_fields({}) == {}
    assert speculative_plan(_opts(speculative="prompt-lookup")) == PromptLookup()


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"speculative": "draft"}, "options.speculative"),
        ({"speculative": True}, "options.speculative"),
        ({"speculative": "prompt-lookup", "lookup_tokens": 0}, "options.lookup_tokens"),
        ({"speculative": "prompt-lookup", "lookup_tokens": 65}, "options.lookup_tokens"),
        ({"speculative": "prompt-lookup", "lookup_tokens": True}, "options.lookup_tokens"),
        ({"speculative": "prompt-lookup", "lookup_ngram": "x"}, "options.lookup_ngram"),
        ({"speculative": "prompt-lookup", "lookup_ngram": 17}, "options.lookup_ngram"),
        ({"draft_model": "acme/d"}, "options.draft_model"),  # not resolved by the model manager
        (
            {"draft_model": "acme/d", "draft_model_path": "/d", "speculative": "prompt-lookup"},
            "options.draft_model",
        ),
        ({"draft_model": "acme/d", "draft_model_path": "/d", "draft_tokens": 0}, "options.draft_tokens"),
    ],
)
def test_bad_values_are_refused_by_name(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        speculative_plan(_opts(**extra))
    assert info.value.param == param


def test_a_draft_model_from_its_resolved_directory() -> None:
    plan = speculative_plan(_opts(draft_model="acme/d", draft_model_path="/d", draft_tokens="3"))
    assert plan == DraftModel("/d", 3)
    assert plan.fields() == {"num_assistant_tokens": 3}
    properties = plan.properties({"INFERENCE_NUM_THREADS": 2}, "/exported")
    assert properties["INFERENCE_NUM_THREADS"] == 2 and "/exported" in properties.values()
    assert warm_up_fields(properties) == {"num_assistant_tokens": DraftModel.num_assistant_tokens}
