"""The fake model's accuracy per model, its refusals per model and row, and the fallback
credit a refusal carries: what `aibatch eval` and escalation are measured against."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest

from aibatch.jobs.spec import JobSpec, load_job_file
from aibatch.simulator import SimulatorServer
from aibatch.simulator.structured import misread
from tests.conftest import sdk_client

StartSimulator = Callable[..., SimulatorServer]
ROOT = Path(__file__).resolve().parents[2]
CREDIT_BETA = {"anthropic-beta": "fallback-credit-2026-07-01"}


def products(count: int) -> list[tuple[str, str]]:
    """(rendered prompt, true category) of the first `count` example products."""
    with (ROOT / "data/products.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:count]
    spec = JobSpec.of(load_job_file(ROOT / "jobs/product-category.toml"))
    return [(spec.render(row), row["category_hint"]) for row in rows]


def ask(client: anthropic.Anthropic, model: str, prompt: str) -> str:
    spec = JobSpec.of(load_job_file(ROOT / "jobs/product-category.toml"), model=model)
    request = spec.request(prompt)
    return spec.parse(client.messages.create(**request), request["max_tokens"])


def test_each_model_answers_labels_with_its_accuracy_and_doubts_go_to_the_catch_all(
    start_simulator: StartSimulator,
) -> None:
    client = sdk_client(
        start_simulator(accuracy={"claude-haiku-5-5": 0.8, "claude-sonnet-5-5": 1.0})
    )
    rows = products(400)
    for model, share in (("claude-haiku-5-5", 0.8), ("claude-sonnet-5-5", 1.0)):
        answers = [ask(client, model, prompt) for prompt, _ in rows]
        right = sum(a == truth for a, (_, truth) in zip(answers, rows, strict=True))
        assert abs(right / len(rows) - share) <= 0.04, (model, right)
        wrong = Counter(a for a, (_, t) in zip(answers, rows, strict=True) if a != t)
        if share < 1:
            assert wrong["other"] >= 0.8 * sum(wrong.values())  # a doubt is the catch-all
        # The same model misreads the same row again: answers are a function of the row.
        assert [ask(client, model, prompt) for prompt, _ in rows[:20]] == answers[:20]


def test_a_misread_json_answer_has_one_value_wrong_and_still_fits_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "total": {"type": "number"},
            "paid": {"type": "boolean"},
            "due": {"type": "string", "format": "date"},
            "currency": {"type": "string", "enum": ["EUR", "USD"]},
        },
    }
    answer = {"total": 12.5, "paid": True, "due": "2026-11-30", "currency": "EUR"}
    seen = set()
    for pick in range(8):
        wrong = misread(answer, schema, pick)
        changed = [k for k in answer if wrong[k] != answer[k]]
        assert len(changed) == 1
        seen.add(changed[0])
    assert seen == set(answer)
    assert misread(answer, schema, 1)["due"] == "2026-12-01"  # names in order: currency, due...
    assert misread(answer, schema, 0)["currency"] == "USD"


def test_refusals_follow_the_model_and_the_row_and_4x_models_never_refuse(
    start_simulator: StartSimulator,
) -> None:
    client = sdk_client(start_simulator(p_refusal=0.3, seed=5))

    def refused(model: str, prompt: str) -> bool:
        request: dict[str, Any] = {
            "model": model, "max_tokens": 20_000,
            "messages": [{"role": "user", "content": prompt}],
        }  # fmt: skip
        return bool(client.messages.create(**request).stop_reason == "refusal")

    prompts = [prompt for prompt, _ in products(60)]
    haiku = [refused("claude-haiku-5-5", p) for p in prompts]
    sonnet = [refused("claude-sonnet-5-5", p) for p in prompts]
    assert [refused("claude-haiku-5-5", p) for p in prompts] == haiku  # again refused
    assert 0 < sum(haiku) < 40 and 0 < sum(sonnet) < 40
    assert haiku != sonnet  # another model usually answers what one refuses
    assert not any(refused("claude-sonnet-4-6", p) for p in prompts)


def create(client: anthropic.Anthropic, body: dict[str, Any], **extra: Any) -> Any:
    return client.messages.create(**body, extra_headers=CREDIT_BETA, **extra)


FABLE_REQUEST: dict[str, Any] = {
    "model": "claude-fable-5-1",
    "max_tokens": 20_000,
    "system": [{"type": "text", "text": "Answer briefly. " * 200,
                "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "<ticket>Help me with my order.</ticket>"}],
}  # fmt: skip


def test_a_refusal_carries_a_fallback_credit_that_a_permitted_model_redeems(
    start_simulator: StartSimulator,
) -> None:
    client = sdk_client(start_simulator(p_refusal=1.0))
    refusal = create(client, FABLE_REQUEST)
    assert refusal.stop_reason == "refusal"
    token = refusal.stop_details.fallback_credit_token
    assert token and refusal.stop_details.fallback_has_prefill_claim is False

    retry = {**FABLE_REQUEST, "model": "claude-opus-4-8"}
    plain = client.messages.create(**retry)  # no credit: the prefix is written again
    assert plain.usage.cache_creation_input_tokens > 0
    client = sdk_client(start_simulator(p_refusal=1.0))
    token = create(client, FABLE_REQUEST).stop_details.fallback_credit_token
    redeemed = create(client, retry, extra_body={"fallback_credit_token": token})
    assert redeemed.stop_reason == "end_turn"  # 4.x runs no classifiers
    assert redeemed.usage.cache_creation_input_tokens == 0
    assert redeemed.usage.cache_read_input_tokens > 0
    raw = redeemed.usage.model_dump()
    assert raw["fallback_credit"] == {"status": {"type": "redeemed"}}


def test_a_credit_that_cannot_redeem_is_a_400_in_strict_mode_and_reported_in_best_effort(
    start_simulator: StartSimulator,
) -> None:
    client = sdk_client(start_simulator(p_refusal=1.0))
    token = create(client, FABLE_REQUEST).stop_details.fallback_credit_token
    changed = {**FABLE_REQUEST, "model": "claude-opus-4-8", "system": "Another prompt."}
    with pytest.raises(anthropic.BadRequestError, match="fallback_credit_token"):
        create(client, changed, extra_body={"fallback_credit_token": token})
    served = create(
        client,
        changed,
        extra_body={"fallback_credit_token": {"token": token, "mode": "best_effort"}},
    )
    status = served.usage.model_dump()["fallback_credit"]["status"]
    assert status == {"type": "not_applied", "reason": "variant_fields_present"}
    not_a_target = {**FABLE_REQUEST, "model": "claude-sonnet-4-6"}
    served = create(
        client, not_a_target,
        extra_body={"fallback_credit_token": {"token": token, "mode": "best_effort"}},
    )  # fmt: skip
    assert (
        served.usage.model_dump()["fallback_credit"]["status"]["reason"] == "invalid_target_model"
    )


def test_models_that_give_no_credit_and_batches_carry_no_token(
    start_simulator: StartSimulator,
) -> None:
    client = sdk_client(start_simulator(p_refusal=1.0, batch_processing_seconds=0))
    haiku = {**FABLE_REQUEST, "model": "claude-haiku-5-5"}
    details = create(client, haiku).stop_details
    assert details.fallback_credit_token is None
    assert details.fallback_has_prefill_claim is None
    assert create(client, FABLE_REQUEST).stop_details.fallback_credit_token  # beta: a token
    without_beta = client.messages.create(**FABLE_REQUEST).stop_details
    assert getattr(without_beta, "fallback_credit_token", None) is None
    batch = client.messages.batches.create(
        requests=[{"custom_id": "a", "params": FABLE_REQUEST}],  # type: ignore[typeddict-item]
        extra_headers=CREDIT_BETA,
    )
    (result,) = list(client.messages.batches.results(batch.id))
    assert result.result.type == "succeeded"
    assert result.result.message.stop_reason == "refusal"
    assert getattr(result.result.message.stop_details, "fallback_credit_token", None) is None


def test_the_one_hour_cache_outlives_the_five_minute_one_and_is_billed_apart(
    start_simulator: StartSimulator,
) -> None:
    import time

    client = sdk_client(start_simulator(cache_ttl_seconds=0.3, cache_min_tokens=100))
    hour = {"type": "ephemeral", "ttl": "1h"}
    request: dict[str, Any] = {
        "model": "claude-haiku-4-5", "max_tokens": 50,
        "system": [{"type": "text", "text": "Shared rules. " * 100, "cache_control": hour},
                   {"type": "text", "text": "Team notes. " * 100,
                    "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "<ticket>Where is my order?</ticket>"}],
    }  # fmt: skip
    first = client.messages.create(**request).usage
    assert first.cache_creation is not None
    one_hour = first.cache_creation.ephemeral_1h_input_tokens
    five_minutes = first.cache_creation.ephemeral_5m_input_tokens
    assert one_hour > 0 and five_minutes > 0
    assert first.cache_creation_input_tokens == one_hour + five_minutes
    time.sleep(0.4)  # the 5-minute entry (0.3 s here) is gone; the 1-hour one is not
    second = client.messages.create(**request).usage
    assert second.cache_read_input_tokens == one_hour
    assert second.cache_creation is not None
    assert second.cache_creation.ephemeral_5m_input_tokens == five_minutes
    assert second.cache_creation.ephemeral_1h_input_tokens == 0

    wrong_order = {**request, "system": list(reversed(request["system"]))}
    with pytest.raises(anthropic.BadRequestError, match="1h"):
        client.messages.create(**wrong_order)
    two_hours = {"type": "ephemeral", "ttl": "2h"}
    bad_ttl = {**request, "system": [{"type": "text", "text": "x", "cache_control": two_hours}]}
    with pytest.raises(anthropic.BadRequestError, match="ttl"):
        client.messages.create(**bad_ttl)
