"""The in-process simulator gives the engine what the HTTP one gives it: the SDK's own
answers and errors, through the same `ApiTarget`."""

from __future__ import annotations

import asyncio

import anthropic
import pytest

from aibatch.engine.backend import Reply
from aibatch.simulator import SimulatorConfig
from aibatch.testing.in_process import InProcessSimulator
from tests.conftest import sim_config

REQUEST = {
    "model": "claude-haiku-5-5",
    "max_tokens": 2048,
    "messages": [{"role": "user", "content": "The export fails with error 7."}],
}


async def create(simulator: InProcessSimulator, timeout_s: float = 10.0) -> Reply:
    backend = simulator.target().connect(timeout_s=timeout_s)
    try:
        return await backend.create(dict(REQUEST))
    finally:
        await backend.aclose()


def test_an_answer_comes_back_as_the_sdk_parses_it_with_its_headers() -> None:
    simulator = InProcessSimulator(sim_config(rpm=600))
    reply = asyncio.run(create(simulator))
    assert "text" in [b.type for b in reply.message.content]  # after its thinking
    assert reply.headers["anthropic-ratelimit-requests-limit"] == "600"
    assert simulator.stats()["requests_total"] == 1


@pytest.mark.parametrize(
    ("config", "options", "error"),
    [
        ({"p529": 1.0}, {}, anthropic.InternalServerError),  # 529 overloaded
        ({"rpm": 1, "burst_seconds": 60, "first_529s": 0}, {}, None),
        ({"p_drop": 1.0}, {}, anthropic.APIConnectionError),
        ({"p_slow": 1.0, "slow_seconds": 5.0}, {"timeout_s": 0.2}, anthropic.APITimeoutError),
        ({"api_key": "the-right-key"}, {}, anthropic.AuthenticationError),
    ],
)
def test_each_fault_is_the_sdk_error_a_socket_would_give(
    config: dict[str, object], options: dict[str, float], error: type[Exception] | None
) -> None:
    simulator = InProcessSimulator(SimulatorConfig.model_validate(config))
    if error is None:  # a limit of 1 a minute: the first goes, the second is a 429
        asyncio.run(create(simulator))
        error = anthropic.RateLimitError
    with pytest.raises(error):
        asyncio.run(create(simulator, **options))
