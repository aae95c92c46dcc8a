"""The capability table: every request it shapes is one its model accepts (by the table's
own rules), defaults are current, and a file can override it."""

from __future__ import annotations

from pathlib import Path

import pytest

from aibatch.errors import ModelFileError
from aibatch.jobs.models import BUILT_IN_DEFAULTS, CONSERVATIVE, EFFORTS, ModelBook
from aibatch.jobs.spec import JobSpec
from aibatch.sdk_models import deprecated_models, known_models

BOOK = ModelBook.load(None)


@pytest.mark.parametrize("job", ["summarize", "classify"])
@pytest.mark.parametrize("model", [*BOOK.rules, "claude-haiku-4-5-20251001", "claude-new-9"])
def test_every_request_keeps_to_its_models_rules(job: str, model: str) -> None:
    spec = JobSpec.build(job, model, None)
    rules = BOOK.rules_for(model)
    params = spec.request("The export fails. Please fix it.")
    assert "tool_choice" not in params and "tools" not in params  # never forced tool use
    assert not {"temperature", "top_p", "top_k"} & params.keys()
    assert [m["role"] for m in params["messages"]] == ["user"]  # no prefill
    assert params["max_tokens"] <= rules.max_output_tokens
    thinking = params.get("thinking")
    if thinking is not None:
        assert thinking["type"] in rules.thinking_types
        assert rules.thinking_off_max_effort is not None
    config = params.get("output_config", {})
    if "effort" in config:
        assert config["effort"] in rules.efforts
        if thinking is not None:
            assert EFFORTS.index(config["effort"]) <= EFFORTS.index(rules.thinking_off_max_effort)
    else:
        assert not rules.efforts
    asked_in_prompt = "Answer with a JSON object" in params["system"][0]["text"]
    if job == "classify":
        assert ("format" in config) == rules.structured_outputs != asked_in_prompt
    else:
        assert "format" not in config and not asked_in_prompt
    # Room for thinking wherever the model thinks before answering.
    assert (params["max_tokens"] > spec.output.answer_tokens) == spec.thinks


def test_thinking_is_turned_off_where_the_model_allows_it_and_given_room_where_not() -> None:
    haiku = JobSpec.build("classify", "claude-haiku-5-5", None).request("x")
    assert haiku["thinking"] == {"type": "disabled"} and haiku["max_tokens"] == 64
    sonnet = JobSpec.build("classify", "claude-sonnet-5-5", None).request("x")
    assert sonnet["thinking"] == {"type": "between_tools"}  # disabled is a 400 there
    opus = JobSpec.build("classify", "claude-opus-5-5", None)
    assert "thinking" not in opus.request("x") and opus.thinks  # always on
    assert opus.max_tokens() == 64 + 2048 and opus.max_tokens(grown=1) == 2 * (64 + 2048)
    assert opus.request("x")["output_config"]["effort"] == "low"
    old = JobSpec.build("summarize", "claude-haiku-4-5", None).request("x")
    assert "thinking" not in old and "output_config" not in old  # no effort on Haiku 4.5


def test_an_unknown_model_gets_the_conservative_rules() -> None:
    spec = JobSpec.build("classify", "claude-new-9", ["a", "b"])
    assert spec.rules is CONSERVATIVE and not BOOK.known("claude-new-9")
    params = spec.request("x")
    assert "thinking" not in params and "output_config" not in params
    assert "one of: a, b" in params["system"][0]["text"]
    assert params["max_tokens"] > 4096  # room for thinking it may do by default


def test_defaults_are_current_models_the_installed_sdk_lists_and_does_not_retire() -> None:
    retiring = deprecated_models()
    assert "claude-opus-4-5" in retiring  # read from the SDK's own table (moved in 2.15)
    for kind, model in BUILT_IN_DEFAULTS.items():
        assert model in known_models(), kind
        assert model not in retiring and BOOK.rules_for(model).current
    assert JobSpec.build("classify", None, None).model == "claude-haiku-5-5"
    assert JobSpec.build("summarize", None, None).model == "claude-sonnet-5-5"


def test_every_entry_names_its_sources() -> None:
    for name, rules in BOOK.rules.items():
        assert rules.sources, name


def test_a_file_changes_entries_field_by_field_adds_models_and_defaults(tmp_path: Path) -> None:
    table = tmp_path / "models.toml"
    table.write_text(
        'checked = "2026-12-24"\n[defaults]\nlabel = "claude-new-9"\n'
        "[models.claude-haiku-5-5]\ncache_min_tokens = 1024\n"
        '[models.claude-new-9]\nstructured_outputs = true\nefforts = ["low", "high"]\n',
        encoding="utf-8",
    )
    book = ModelBook.load(table)
    haiku = book.rules_for("claude-haiku-5-5")
    assert haiku.cache_min_tokens == 1024 and haiku.thinking_off == "disabled"
    new = book.rules_for("claude-new-9")
    assert new.structured_outputs and new.efforts == ("low", "high")
    assert new.sampling is CONSERVATIVE.sampling  # the rest from the conservative rules
    assert book.default_model("label") == "claude-new-9" and book.checked == "2026-12-24"
    spec = JobSpec.build("classify", None, None, models=book)
    assert spec.model == "claude-new-9"
    assert spec.request("x")["output_config"]["effort"] == "low"


def test_a_bad_file_names_the_file_and_the_entry(tmp_path: Path) -> None:
    table = tmp_path / "models.toml"
    table.write_text("[models.claude-haiku-5-5]\ncache_min = 3\n", encoding="utf-8")
    with pytest.raises(ModelFileError, match=r"models\.toml: models\.claude-haiku-5-5\.cache_min"):
        ModelBook.load(table)
    table.write_text('[models.m]\nefforts = ["fast"]\n', encoding="utf-8")
    with pytest.raises(ModelFileError, match="efforts"):
        ModelBook.load(table)
