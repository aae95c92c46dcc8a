"""Run the flow from a terminal: validate first, pick the backend, keep Prefect's history.

With no ANTHROPIC_API_KEY the built-in simulator is started and used (and the user is
told so); with a key, ANTHROPIC_BASE_URL (a gateway) is honoured, as the SDK does. Both
are read here, once, into the `ApiTarget` the run is handed. With no
PREFECT_API_URL the flow runs on Prefect's local server, whose history is kept in
PREFECT_HOME (by default ~/.prefect) so every run and chunk stays readable afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from aibatch.engine.backend import ApiTarget
from aibatch.errors import EXIT_FAILED, EXIT_OK, BadInput, exit_code
from aibatch.runs.interrupts import SIGTERM_IN_EVENT_LOOP
from aibatch.runs.parameters import RunParameters
from aibatch.runs.plan import RunPlan
from aibatch.sdk_models import deprecated_models
from aibatch.simulator.config import SimulatorConfig
from aibatch.simulator.process import SimulatorProcess

if TYPE_CHECKING:  # the eval's modules load only when an eval runs
    from aibatch.runs.evaluation import EvalParameters

RunFlow = Callable[
    [RunParameters], Coroutine[Any, Any, dict[str, Any]]
]  # the flow, called as a coroutine
SIMULATOR_KEY = "aibatch-simulator"  # a placeholder the simulator accepts; not a secret


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prefect_environment() -> None:
    """Settings for a local run when no Prefect server is configured. Prefect reads its
    settings when it is first imported: call this before that, or they do not apply."""
    if os.environ.get("PREFECT_API_URL"):
        return
    # Prefect's local server takes 20-40 s to start on small machines; its default
    # startup timeout (20 s) would fail the run before it began.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@contextlib.contextmanager
def api_target(simulator: SimulatorConfig | None = None) -> Iterator[ApiTarget]:
    """Where this run's requests go, read from the environment here, at the top: the key
    and ANTHROPIC_BASE_URL (a gateway); with no key, the simulator, started for the run."""
    key = os.environ.get("ANTHROPIC_API_KEY")
    if key:
        yield ApiTarget(key, os.environ.get("ANTHROPIC_BASE_URL") or None)
        return
    with SimulatorProcess(simulator or SimulatorConfig()) as sim:
        say(
            f"No ANTHROPIC_API_KEY set: using aibatch's built-in API simulator at {sim.base_url}"
            " (no real API calls, no cost)."
        )
        yield ApiTarget(SIMULATOR_KEY, sim.base_url)


class Interrupted(BaseException):
    """SIGTERM outside Prefect's own handling (or re-sent by it once the flow cleaned up)."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal = signal_number


def _raise_interrupted(signal_number: int, frame: object) -> None:
    raise Interrupted(signal_number)


DRY_RUN_REQUESTS = 3  # requests a dry run prints


def plan_or_say(params: RunParameters) -> RunPlan | int:
    """The run's plan, or the exit code after saying what in the input is at fault."""
    try:
        return RunPlan.build(params)
    except BadInput as exc:
        say(f"error: {exc}")
        return exit_code(exc)


def dry_run_locally(params: RunParameters) -> int:
    """Validate, print the first requests a run would send (JSON) and its estimate; no
    generation call, nothing written. Returns the process exit code."""
    import json

    from aibatch.runs import estimate

    plan = plan_or_say(params)
    if isinstance(plan, int):
        return plan
    spec, frame, pending = plan.spec, plan.rows.frame, plan.pending.rows
    positions = pending.index.tolist()
    say(f"dry run: {len(pending)} of {len(frame)} rows would be sent ({spec.job}, "
        f"{spec.model}, key {spec.prompt_version}); the first {DRY_RUN_REQUESTS}:")  # fmt: skip
    for position in positions[:DRY_RUN_REQUESTS]:
        print(json.dumps(spec.request(plan.prompts[position]), indent=2, ensure_ascii=False))
    if not positions:
        return EXIT_OK  # every row is done: a run would send nothing
    chosen = dataclasses.replace(plan.rows, frame=frame.loc[positions].reset_index(drop=True))
    with api_target() as target:
        result = asyncio.run(estimate.estimate(
            chosen, [plan.prompts[p] for p in positions], [spec], plan.prices, backend=target,
            output_dir=params.output_dir,
        ))  # fmt: skip
    estimate.render(result)
    return EXIT_FAILED if result.failed else EXIT_OK


def run_locally(
    params: RunParameters, flow: RunFlow, simulator: SimulatorConfig | None = None
) -> int:
    """Plan the run (validating everything), then run `flow` (the flow, passed in: this
    module imports no flow) with that plan; return the process exit code. A run with
    nothing to do says so without starting Prefect or the simulator."""
    plan = plan_or_say(params)
    if isinstance(plan, int):
        return plan
    spec, rows = plan.spec, plan.rows
    retiring = deprecated_models().get(spec.model)
    if retiring is not None:
        say(f"warning: {spec.model} reaches its end of life on {retiring} (the SDK's list)")
    if plan.nothing_to_do:
        say(
            f"nothing to do: all {len(rows.frame)} rows of {params.input_path} are done for "
            f"{spec.job}/{spec.model}/{spec.prompt_version}; results in "
            f"{params.output_dir}/{spec.job}/results"
        )
        return EXIT_OK
    say(
        f"{len(rows.frame)} rows in {params.input_path}: {spec.job} → {params.output_dir}"
        + (" (Message Batches, half price)" if params.mode == "batch" else "")
    )

    async def checked_then_run(target: ApiTarget) -> dict[str, Any]:
        if target.api_key != SIMULATOR_KEY:  # the real API (or a gateway): is the table right?
            from aibatch.runs.model_check import check_models

            used = [spec.model] + ([spec.escalation.model] if spec.escalation else [])
            for warning in await check_models(target, used, plan.models, params.mode == "batch"):
                say(f"warning: {warning} (the capability table: --models FILE corrects it)")
        plan.api = target
        plan.hand_on()  # the flow, started next in this process, takes this plan
        return await flow(params)

    summary = run_flow(checked_then_run, simulator)
    if isinstance(summary, int):
        return summary
    from aibatch.runs.progress import render_summary

    render_summary(summary, f"{params.output_dir}/{summary['job']}/results")
    held_back = summary.get("held_back") or 0
    say(
        f"done: {summary['ok']} ok, {summary['failed']} failed, {summary['already_done']} "
        f"already done"
        + (f", {held_back} left for a later run (trial)" if held_back else "")
        + f"; results in {params.output_dir}/{summary['job']}/results"
    )
    return EXIT_OK


def run_flow(
    start: Callable[[ApiTarget], Coroutine[Any, Any, dict[str, Any]]],
    simulator: SimulatorConfig | None = None,
) -> dict[str, Any] | int:
    """Run a flow (`start` makes its coroutine, given where requests go) on the configured
    or a temporary Prefect server; its result, or the exit code after saying what failed or
    that it was interrupted."""
    prefect_environment()

    from prefect.exceptions import TerminationSignal

    # Prefect turns SIGTERM into an exception inside the flow, lets the flow clean up, then
    # re-sends the signal to the handler that was there before: make that one ours, so the
    # process exits with a message and a status instead of dying silently.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupted) if in_main_thread else None
    in_loop = SIGTERM_IN_EVENT_LOOP.set(True)  # asyncio.run's task starts from this context
    try:
        with api_target(simulator) as target:
            try:
                return asyncio.run(start(target))
            except Exception as exc:  # the flow's own failure message says what to do
                say(f"error: {exc}")
                return exit_code(exc)
    except (KeyboardInterrupt, TerminationSignal, Interrupted) as exc:
        number = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else exc.signal
        say(
            f"interrupted ({signal.Signals(number).name}): every answer received is saved; "
            "run the same command again to continue"
        )
        return 128 + number  # as a shell reports death by that signal
    finally:
        SIGTERM_IN_EVENT_LOOP.reset(in_loop)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


EvalFlow = Callable[["EvalParameters"], Coroutine[Any, Any, dict[str, Any]]]


def evaluate_locally(params: EvalParameters, flow: EvalFlow, as_json: bool = False) -> int:
    """Plan the evaluation (job, known answers, sample), run `flow` for the candidates that
    have rows to answer, then print the scores (a table, or JSON on stdout). When every
    candidate has answered the sample already, it only scores: no Prefect, no simulator."""
    import json

    from aibatch.runs.evaluation import EvalPlan, render

    try:
        plan = EvalPlan.build(params)
    except BadInput as exc:
        say(f"error: {exc}")
        return exit_code(exc)
    say(
        f"eval: {len(plan.sample_ids)} rows of {params.input_path} with known answers in "
        f"{params.truth_path}; {plan.spec.job} on {', '.join(params.models)}"
    )
    runs = [RunPlan.build(plan.run_parameters(c)) for c in params.candidates]
    if any(not run.nothing_to_do for run in runs):

        def start(target: ApiTarget) -> Coroutine[Any, Any, dict[str, Any]]:
            plan.api = target
            plan.hand_on()
            for run in runs:  # the flow takes these plans: each candidate planned once
                run.hand_on()
            return flow(params)

        outcome = run_flow(start)
        if isinstance(outcome, int):
            return outcome
    report = plan.score()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render(report)
    return EXIT_OK
