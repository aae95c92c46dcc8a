"""`aibatch run` from a terminal, around the flow: what it decides before Prefect starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aibatch.app import local
from aibatch.app.local import run_locally
from aibatch.errors import EXIT_BAD_INPUT, EXIT_OK
from aibatch.runs.parameters import RunParameters
from aibatch.runs.plan import RunPlan
from tests.helpers import ROOT, write_tickets
from tests.runs.test_plan import answer_rows, params_for


def refuse_to_start(*args: object, **kwargs: object) -> Any:
    raise AssertionError("started the simulator")


def test_a_run_with_nothing_to_do_says_so_without_prefect_or_the_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = list(write_tickets(tmp_path / "rows.csv", 8))
    params = params_for(tmp_path)
    answer_rows(RunPlan.build(params), ids)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setattr(local, "SimulatorProcess", refuse_to_start)
    said: list[str] = []
    monkeypatch.setattr(local, "say", said.append)
    flows: list[RunParameters] = []

    async def flow(given: RunParameters) -> dict[str, Any]:
        flows.append(given)
        raise AssertionError("started the flow")

    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*"))
    assert run_locally(params, flow) == EXIT_OK
    assert flows == []
    assert said == [
        f"nothing to do: all 8 rows of {tmp_path / 'rows.csv'} are done for classify/"
        f"claude-haiku-5-5/{RunPlan.build(params).spec.prompt_version}; results in "
        f"{tmp_path / 'out'}/classify/results"
    ]
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*")) == before


def test_a_run_hands_its_plan_and_api_target_to_the_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tickets(tmp_path / "rows.csv", 4)
    params = params_for(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-never-shown")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setattr(local, "say", lambda message: None)
    taken: list[RunPlan] = []

    async def flow(given: RunParameters) -> dict[str, Any]:
        taken.append(RunPlan.of(given))
        return {"ok": 4, "failed": 0, "already_done": 0, "job": "classify"}

    assert run_locally(params, flow) == EXIT_OK
    (plan,) = taken
    assert plan.pending.rows["id"].tolist() == plan.rows.frame["id"].tolist()
    assert plan.api is not None and plan.api.base_url == "http://127.0.0.1:9"
    assert "sk-test" not in repr(plan.api) and "sk-test" not in repr(plan)


def test_bad_input_exits_2_before_the_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rows.csv").write_text("id,text\n1,fine\n1,twice\n", encoding="utf-8")
    said: list[str] = []
    monkeypatch.setattr(local, "say", said.append)

    async def flow(given: RunParameters) -> dict[str, Any]:
        raise AssertionError("started the flow")

    assert run_locally(params_for(tmp_path), flow) == EXIT_BAD_INPUT
    assert said and "duplicate id '1'" in said[0] and "row 2" in said[0]


def test_prefect_starts_its_local_server_with_the_longer_timeout_aibatch_sets(
    tmp_path: Path,
) -> None:
    """Prefect reads its settings once, when first imported: the CLI sets the local
    server's startup timeout (180 s: a loaded machine takes over 20) before that."""
    import os
    import subprocess
    import sys

    probe = (
        "import sys, aibatch.app.local as local\n"
        "def run_locally(params, flow, simulator=None):\n"
        "    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as S\n"
        "    print('timeout', S.value())\n"
        "    return 0\n"
        "local.run_locally = run_locally\n"
        "from aibatch.app.cli import app\n"
        f"sys.argv = ['aibatch', 'run', 'data/tickets.csv', '--output', {str(tmp_path)!r}]\n"
        "app()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)  # fmt: skip
    assert "timeout 180" in done.stdout, done.stderr[-2000:]
