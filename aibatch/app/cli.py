"""The `aibatch` command line."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError

from aibatch.jobs.spec import JOBS
from aibatch.runs.orchestration import (
    API_KEY_BLOCK,
    DEFAULT_CHUNK_SLOTS,
    WORK_POOL,
)
from aibatch.runs.parameters import RunParameters
from aibatch.simulator.config import SimulatorConfig, StormWindow

app = typer.Typer(
    help="Push thousands of Anthropic Messages API requests through a rate limit, losing nothing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """aibatch: ask Claude the same question of thousands of rows, at the rate limit."""


# `aibatch run`'s options (by parameter name) and the RunParameters field each sets: the one
# place they meet, so an error about a field names the option the user typed.
RUN_OPTIONS: dict[str, str] = {
    "input_path": "input_path", "job": "job", "model": "model", "output": "output_dir",
    "job_file": "job_definition", "labels": "labels", "limit": "limit", "sample": "sample",
    "effort": "effort", "models": "models_path", "chunk_size": "chunk_size",
    "chunk_slots": "chunk_slots", "id_column": "id_column", "text_column": "text_column",
    "progress": "show_progress", "rpm": "rpm", "itpm": "itpm", "otpm": "otpm",
    "shared_rpm": "shared_rpm", "shared_itpm": "shared_itpm", "shared_otpm": "shared_otpm",
    "shards": "shards", "timeout": "request_timeout_s",
    "mode": "mode", "budget_usd": "budget_usd", "prices": "prices_path",
    "instructions": "instructions_path", "batch_size": "batch_max_requests",
    "batch_poll_max": "batch_poll_max_s", "batch_resubmits": "batch_resubmits",
    "max_concurrency": "max_concurrency", "max_attempts": "max_attempts",
    "outage_deadline": "outage_deadline_s", "escalate_to": "escalate_to",
    "escalate_labels": "escalate_labels", "ask_once": "ask_once", "verbose": "verbose",
}  # fmt: skip
# Where an option's help comes from when that is not the field it sets: `--job-file` reads
# the file and passes its definition, but is described as the file.
HELP_FIELD = {"job_file": "job_file"}


def option_name(parameter: str) -> str:
    """How the user typed the option behind a parameter of `aibatch run`."""
    return parameter.upper() if parameter == "input_path" else "--" + parameter.replace("_", "-")


def run_option_errors(error: ValidationError) -> str:
    """The errors of RunParameters, each under the option that set the field (an error about
    several fields at once stands alone)."""
    return option_errors(error, {field: option_name(name) for name, field in RUN_OPTIONS.items()})


def option_errors(error: ValidationError, option_of: dict[str, str]) -> str:
    """A model's validation errors, each under the option that set the field (`option_of`:
    field -> option as typed; a field not in it is named as it is)."""
    problems = []
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        loc = [str(part) for part in problem["loc"]]
        if not loc:
            problems.append(message)
            continue
        where = option_of.get(loc[0], loc[0])
        inside = f" ({'.'.join(loc[1:])})" if len(loc) > 1 else ""
        problems.append(f"{where}{inside}: {message}")
    return "; ".join(problems)


def _int(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text  # validation names the option


def _help(option: str) -> str:
    """The help of an option that sets a run parameter: the field's description, declared
    once in RunParameters (the Prefect UI's form shows the same words). No "[default: ...]"
    in them: rich takes the brackets for markup and drops them."""
    return RunParameters.model_fields[HELP_FIELD.get(option, RUN_OPTIONS[option])].description or ""


# The default of each option that sets a run parameter: the field's own.
DEFAULT: dict[str, Any] = {
    option: RunParameters.model_fields[field].default for option, field in RUN_OPTIONS.items()
}


# Options `run` and `estimate` share.
InputPath = Annotated[str, typer.Argument(help=_help("input_path"))]
JobOption = Annotated[str, typer.Option(help=_help("job"))]
JobFileOption = Annotated[str | None, typer.Option(help=_help("job_file"))]
LabelsOption = Annotated[str | None, typer.Option(help=_help("labels"))]
PricesOption = Annotated[str | None, typer.Option(help=_help("prices"))]
InstructionsOption = Annotated[str | None, typer.Option(help=_help("instructions"))]
ModelsOption = Annotated[str | None, typer.Option(help=_help("models"))]
EffortOption = Annotated[str | None, typer.Option(help=_help("effort"))]
IdColumn = Annotated[str | None, typer.Option(help=_help("id_column"))]
TextColumn = Annotated[str, typer.Option(help=_help("text_column"))]


@app.command("run")
def run(
    input_path: InputPath = DEFAULT["input_path"],
    job: JobOption = DEFAULT["job"],
    labels: LabelsOption = DEFAULT["labels"],
    model: Annotated[str | None, typer.Option(help=_help("model"))] = DEFAULT["model"],
    escalate_to: Annotated[str | None, typer.Option(help=_help("escalate_to"))] = DEFAULT[
        "escalate_to"
    ],
    escalate_labels: Annotated[str | None, typer.Option(help=_help("escalate_labels"))] = None,
    effort: EffortOption = DEFAULT["effort"],
    models: ModelsOption = DEFAULT["models"],
    output: Annotated[str, typer.Option(help=_help("output"))] = DEFAULT["output"],
    chunk_size: Annotated[int | None, typer.Option(help=_help("chunk_size"))] = DEFAULT[
        "chunk_size"
    ],
    max_concurrency: Annotated[str, typer.Option(help=_help("max_concurrency"))] = DEFAULT[
        "max_concurrency"
    ],
    rpm: Annotated[int | None, typer.Option(help=_help("rpm"))] = DEFAULT["rpm"],
    itpm: Annotated[int | None, typer.Option(help=_help("itpm"))] = DEFAULT["itpm"],
    otpm: Annotated[int | None, typer.Option(help=_help("otpm"))] = DEFAULT["otpm"],
    chunk_slots: Annotated[int | None, typer.Option(help=_help("chunk_slots"))] = DEFAULT[
        "chunk_slots"
    ],
    shared_rpm: Annotated[int | None, typer.Option(help=_help("shared_rpm"))] = DEFAULT[
        "shared_rpm"
    ],
    shared_itpm: Annotated[int | None, typer.Option(help=_help("shared_itpm"))] = DEFAULT[
        "shared_itpm"
    ],
    shared_otpm: Annotated[int | None, typer.Option(help=_help("shared_otpm"))] = DEFAULT[
        "shared_otpm"
    ],
    shards: Annotated[int, typer.Option(help=_help("shards"))] = DEFAULT["shards"],
    timeout: Annotated[float, typer.Option(help=_help("timeout"))] = DEFAULT["timeout"],
    max_attempts: Annotated[int, typer.Option(help=_help("max_attempts"))] = DEFAULT[
        "max_attempts"
    ],
    outage_deadline: Annotated[float, typer.Option(help=_help("outage_deadline"))] = DEFAULT[
        "outage_deadline"
    ],
    mode: Annotated[str, typer.Option(help=_help("mode"))] = DEFAULT["mode"],
    budget_usd: Annotated[float | None, typer.Option(help=_help("budget_usd"))] = DEFAULT[
        "budget_usd"
    ],
    prices: PricesOption = DEFAULT["prices"],
    instructions: InstructionsOption = DEFAULT["instructions"],
    batch_size: Annotated[int, typer.Option(help=_help("batch_size"))] = DEFAULT["batch_size"],
    batch_poll_max: Annotated[float, typer.Option(help=_help("batch_poll_max"))] = DEFAULT[
        "batch_poll_max"
    ],
    batch_resubmits: Annotated[int, typer.Option(help=_help("batch_resubmits"))] = DEFAULT[
        "batch_resubmits"
    ],
    id_column: IdColumn = DEFAULT["id_column"],
    text_column: TextColumn = DEFAULT["text_column"],
    job_file: JobFileOption = None,
    limit: Annotated[int | None, typer.Option(help=_help("limit"))] = DEFAULT["limit"],
    sample: Annotated[int | None, typer.Option(help=_help("sample"))] = DEFAULT["sample"],
    dry_run: Annotated[
        bool,
        typer.Option(help="Print the first requests as JSON and the estimate; send nothing."),
    ] = False,
    ask_once: Annotated[bool, typer.Option(help=_help("ask_once"))] = DEFAULT["ask_once"],
    verbose: Annotated[bool, typer.Option(help=_help("verbose"))] = DEFAULT["verbose"],
    # A terminal's run shows progress unless told not to (a flow run's default is off).
    progress: Annotated[bool, typer.Option(help=_help("progress"))] = True,
) -> None:
    """Ask the job's question of every row of INPUT_PATH; re-running resumes.

    Without ANTHROPIC_API_KEY it runs on the built-in simulator and says so. Results go to
    OUTPUT/JOB/results (hive-partitioned Parquet), permanent failures to OUTPUT/JOB/failures.
    """
    import os

    from aibatch.app.local import dry_run_locally, run_locally, say
    from aibatch.errors import EXIT_BAD_INPUT

    given = _read_options(dict(locals()))
    if max_concurrency != "auto":
        given["max_concurrency"] = _int(max_concurrency)
    if shards > 1 and not os.environ.get("PREFECT_API_URL"):
        say("error: --shards needs a Prefect server with aibatch deployed: set PREFECT_API_URL")
        raise typer.Exit(EXIT_BAD_INPUT)
    params = _run_parameters(given)
    if dry_run:
        raise typer.Exit(dry_run_locally(params))
    from aibatch.app.local import prefect_environment

    prefect_environment()  # before Prefect is imported: it reads its settings once, then
    from aibatch.flows.process_rows import process_rows  # Prefect loads in seconds: only to run

    raise typer.Exit(run_locally(params, process_rows))


def _read_options(given: dict[str, Any]) -> dict[str, Any]:
    """Options as typed (by parameter name), with those `run` and `estimate` share read:
    --job checked, --job-file's definition, --labels split; exit 2 naming one at fault."""
    from aibatch.app.local import say
    from aibatch.errors import EXIT_BAD_INPUT

    if given["job"] not in JOBS:
        say(f"error: --job must be one of {', '.join(JOBS)}, not {given['job']!r}")
        raise typer.Exit(EXIT_BAD_INPUT)

    def split(name: str) -> list[str] | None:
        text = given.get(name)
        return [label.strip() for label in text.split(",")] if text else None

    return {
        **given,
        "job_file": _job_file_or_exit(given.get("job_file")),  # the file's definition
        "labels": split("labels"),
        "escalate_labels": split("escalate_labels"),
    }


def _run_parameters(given: dict[str, Any]) -> RunParameters:
    """The run's parameters from options as typed (by parameter name; those not given keep
    their defaults); exit 2 naming each option at fault."""
    from aibatch.app.local import say
    from aibatch.errors import EXIT_BAD_INPUT

    options = {field: given[name] for name, field in RUN_OPTIONS.items() if name in given}
    try:
        return RunParameters.model_validate(options)
    except ValidationError as exc:
        say(f"error: {run_option_errors(exc)}")
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _job_file_or_exit(path: str | None) -> object:
    """The job file's definition (None without one); exit 2 naming the file and the key."""
    if path is None:
        return None
    from aibatch.app.local import say
    from aibatch.errors import EXIT_BAD_INPUT, JobFileError
    from aibatch.jobs.spec import load_job_file

    try:
        return load_job_file(path)
    except JobFileError as exc:
        say(f"error: {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None


@app.command("jobs")
def jobs() -> None:
    """List the built-in jobs (each a job file shipped with aibatch; copy one to start)."""
    from aibatch.jobs.spec import BUILT_IN_JOBS, builtin_job

    for name in BUILT_IN_JOBS:
        definition = builtin_job(name)
        output = definition.output
        what = output.kind + (f": {', '.join(output.labels or [])}" if output.labels else "")
        first_line = definition.system.strip().split(". ")[0]
        typer.echo(f"{name:<12} {what}\n{'':<12} {first_line}.")


@app.command("setup")
def setup(
    work_pool: Annotated[
        str, typer.Option(help="Process work pool the deployments in prefect.yaml use.")
    ] = WORK_POOL,
    chunk_slots: Annotated[
        int, typer.Option(help="Chunks running at once across every run and worker.")
    ] = DEFAULT_CHUNK_SLOTS,
    shared_rpm: Annotated[
        int | None,
        typer.Option(help="Requests/min shared by every run and worker (the API key's limit)."),
    ] = None,
    shared_itpm: Annotated[
        int | None,
        typer.Option(help="Input tokens/min shared by every run and worker (the key's limit)."),
    ] = None,
    shared_otpm: Annotated[
        int | None,
        typer.Option(help="Output tokens/min shared by every run and worker (the key's limit)."),
    ] = None,
    in_flight: Annotated[
        int | None,
        typer.Option(help="Requests in flight at once across every run and worker."),
    ] = None,
    store_api_key: Annotated[
        bool,
        typer.Option(
            help="Store $ANTHROPIC_API_KEY (or, if unset, one typed at a hidden prompt) in "
            f"the Prefect Secret block {API_KEY_BLOCK!r}, for workers without the key."
        ),
    ] = False,
) -> None:
    """Prepare the Prefect server at PREFECT_API_URL for aibatch (safe to run again).

    Creates the work pool and the concurrency limits aibatch uses, and optionally keeps the
    API key in a Secret block. Then: `prefect --no-prompt deploy --all` and start a worker
    with `prefect worker start --pool aibatch-process`.
    """
    import asyncio
    import os

    from aibatch.app.local import say
    from aibatch.errors import EXIT_BAD_INPUT, EXIT_FAILED

    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            say(
                "error: PREFECT_API_URL is not set: point it at your Prefect server, e.g. "
                "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`"
            )
            raise typer.Exit(EXIT_BAD_INPUT)
    for name, value in (("--chunk-slots", chunk_slots), ("--shared-rpm", shared_rpm),
                        ("--shared-itpm", shared_itpm), ("--shared-otpm", shared_otpm),
                        ("--in-flight", in_flight)):  # fmt: skip
        if value is not None and value < 1:
            say(f"error: {name} must be at least 1")
            raise typer.Exit(EXIT_BAD_INPUT)
    key = None
    if store_api_key:
        key = os.environ.get("ANTHROPIC_API_KEY") or typer.prompt(
            "Anthropic API key", hide_input=True
        )
    from aibatch.prefect_server.setup import setup_server

    try:
        report = asyncio.run(setup_server(
            work_pool, chunk_slots, shared_rpm, in_flight, key, shared_itpm, shared_otpm
        ))  # fmt: skip
    except Exception as exc:  # the server is unreachable, say; never echo the key
        say(f"error: setup failed: {type(exc).__name__}: {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    for line in report.lines():
        typer.echo(line)


def _simulator_help(field: str) -> str:
    """An option of `simulate-api` is described by the simulator's own setting."""
    return SimulatorConfig.model_fields[field].description or ""


def _simulator_default(field: str) -> Any:
    """An option of `simulate-api` defaults to the simulator's own setting."""
    return SimulatorConfig.model_fields[field].default


@app.command("simulate-api")
def simulate_api(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8765,
    rpm: Annotated[int | None, typer.Option(help=_simulator_help("rpm"))] = _simulator_default(
        "rpm"
    ),
    itpm: Annotated[int | None, typer.Option(help=_simulator_help("itpm"))] = _simulator_default(
        "itpm"
    ),
    otpm: Annotated[int | None, typer.Option(help=_simulator_help("otpm"))] = _simulator_default(
        "otpm"
    ),
    burst_seconds: Annotated[
        float, typer.Option(help=_simulator_help("burst_seconds"))
    ] = _simulator_default("burst_seconds"),
    window: Annotated[
        Literal["bucket", "sliding"],
        typer.Option(help=_simulator_help("window")),
    ] = _simulator_default("window"),
    no_ratelimit_headers: Annotated[
        bool, typer.Option(help="Do not send anthropic-ratelimit-* headers (as some proxies).")
    ] = False,
    no_retry_after: Annotated[bool, typer.Option(help="Send 429s without retry-after.")] = False,
    ratelimit_header_set: Annotated[
        Literal["full", "tokens"],
        typer.Option(help=_simulator_help("ratelimit_header_set")),
    ] = _simulator_default("ratelimit_header_set"),
    other_client_rpm: Annotated[
        int | None,
        typer.Option(help=_simulator_help("other_client_rpm")),
    ] = _simulator_default("other_client_rpm"),
    other_client_itpm: Annotated[
        int | None,
        typer.Option(help=_simulator_help("other_client_itpm")),
    ] = _simulator_default("other_client_itpm"),
    latency_ms: Annotated[
        float, typer.Option(help=_simulator_help("latency_ms"))
    ] = _simulator_default("latency_ms"),
    latency_sigma: Annotated[
        float, typer.Option(help=_simulator_help("latency_sigma"))
    ] = _simulator_default("latency_sigma"),
    ms_per_output_token: Annotated[
        float, typer.Option(help=_simulator_help("ms_per_output_token"))
    ] = _simulator_default("ms_per_output_token"),
    p529: Annotated[float, typer.Option(help=_simulator_help("p529"))] = _simulator_default("p529"),
    first_529s: Annotated[
        int, typer.Option(help=_simulator_help("first_529s"))
    ] = _simulator_default("first_529s"),
    p500: Annotated[float, typer.Option(help=_simulator_help("p500"))] = _simulator_default("p500"),
    p503: Annotated[float, typer.Option(help=_simulator_help("p503"))] = _simulator_default("p503"),
    overload_retry_after_s: Annotated[
        float | None,
        typer.Option(help=_simulator_help("overload_retry_after_s")),
    ] = _simulator_default("overload_retry_after_s"),
    p_drop: Annotated[float, typer.Option(help=_simulator_help("p_drop"))] = _simulator_default(
        "p_drop"
    ),
    p_slow: Annotated[float, typer.Option(help=_simulator_help("p_slow"))] = _simulator_default(
        "p_slow"
    ),
    slow_seconds: Annotated[
        float, typer.Option(help=_simulator_help("slow_seconds"))
    ] = _simulator_default("slow_seconds"),
    storm: Annotated[
        list[str] | None,
        typer.Option(help="START:DURATION seconds after start in which every message is a 429."),
    ] = None,
    outage: Annotated[
        list[str] | None,
        typer.Option(
            help="START:DURATION seconds after start in which every message is an overload."
        ),
    ] = None,
    outage_status: Annotated[
        int, typer.Option(help=_simulator_help("outage_status"))
    ] = _simulator_default("outage_status"),
    send_should_retry: Annotated[
        bool,
        typer.Option(help=_simulator_help("send_should_retry")),
    ] = _simulator_default("send_should_retry"),
    spend_cap_after: Annotated[
        int | None, typer.Option(help=_simulator_help("spend_cap_after"))
    ] = _simulator_default("spend_cap_after"),
    revoke_key_after: Annotated[
        int | None, typer.Option(help=_simulator_help("revoke_key_after"))
    ] = _simulator_default("revoke_key_after"),
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="AIBATCH_SIMULATOR_API_KEY",
            help=_simulator_help("api_key"),
            show_default=False,
        ),
    ] = _simulator_default("api_key"),
    context_window: Annotated[
        int | None,
        typer.Option(help=_simulator_help("context_window")),
    ] = _simulator_default("context_window"),
    cache_min_tokens: Annotated[
        int | None,
        typer.Option(help=_simulator_help("cache_min_tokens")),
    ] = _simulator_default("cache_min_tokens"),
    thinking_scale: Annotated[
        float, typer.Option(help=_simulator_help("thinking_scale"))
    ] = _simulator_default("thinking_scale"),
    p_refusal: Annotated[
        float, typer.Option(help=_simulator_help("p_refusal"))
    ] = _simulator_default("p_refusal"),
    accuracy: Annotated[
        list[str] | None, typer.Option(help=_simulator_help("accuracy"), show_default=False)
    ] = None,
    obey_injection: Annotated[
        bool, typer.Option(help=_simulator_help("obey_injection"))
    ] = _simulator_default("obey_injection"),
    batch_processing_seconds: Annotated[
        float, typer.Option(help=_simulator_help("batch_processing_seconds"))
    ] = _simulator_default("batch_processing_seconds"),
    batch_p_errored: Annotated[
        float, typer.Option(help=_simulator_help("batch_p_errored"))
    ] = _simulator_default("batch_p_errored"),
    batch_p_expired: Annotated[
        float, typer.Option(help=_simulator_help("batch_p_expired"))
    ] = _simulator_default("batch_p_expired"),
    seed: Annotated[int, typer.Option(help=_simulator_help("seed"))] = _simulator_default("seed"),
    config_json: Annotated[
        str | None, typer.Option(hidden=True, help="A whole SimulatorConfig as JSON.")
    ] = None,
) -> None:
    """Start the Messages API simulator on 127.0.0.1 (the default backend with no API key)."""
    from aibatch.simulator.config import OutageWindow
    from aibatch.simulator.server import serve_forever

    if config_json is not None:
        config = SimulatorConfig.model_validate_json(config_json)
    else:
        try:
            given = dict(locals())  # every option as typed, by its parameter name
            fields = {name: given[name] for name in SimulatorConfig.model_fields if name in given}
            fields["accuracy"] = accuracy or []
            config = SimulatorConfig(
                **fields,
                send_ratelimit_headers=not no_ratelimit_headers,
                send_retry_after=not no_retry_after,
                storms=[StormWindow.parse(s) for s in storm or []],
                outages=[OutageWindow.parse(s) for s in outage or []],
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc

    def announce(url: str) -> None:
        typer.echo(f"aibatch simulator listening on {url} (Ctrl-C stops it)", err=False)
        typer.echo(f"  export ANTHROPIC_BASE_URL={url}", err=False)

    serve_forever(config, port, announce)


@app.command("estimate")
def estimate(
    input_path: InputPath = DEFAULT["input_path"],
    job: JobOption = DEFAULT["job"],
    labels: LabelsOption = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="A model to estimate for; repeat for several (default: the job's default "
            "model and the current models of the capability table)."
        ),
    ] = None,
    output: Annotated[
        str, typer.Option(help="Output directory whose earlier results calibrate output tokens.")
    ] = DEFAULT["output"],
    sample: Annotated[
        int, typer.Option(help="Rows whose prompt is counted with count_tokens, per model.")
    ] = 200,
    prices: PricesOption = None,
    instructions: InstructionsOption = None,
    effort: EffortOption = None,
    models: ModelsOption = None,
    id_column: IdColumn = None,
    text_column: TextColumn = DEFAULT["text_column"],
    job_file: JobFileOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Estimate the tokens and cost of processing every row of INPUT_PATH, per model,
    realtime and batch, before any generation call (prompts are counted with count_tokens).

    Without ANTHROPIC_API_KEY it counts on the built-in simulator and says so.
    """
    import asyncio
    import json

    from aibatch.app.local import api_target, plan_or_say, say
    from aibatch.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EstimateError, exit_code
    from aibatch.runs import estimate as estimating

    given = _read_options(dict(locals()))
    if sample < 1:
        say("error: --sample must be at least 1")
        raise typer.Exit(EXIT_BAD_INPUT)
    # The plan's own spec uses the job's model; the estimate asks each of `names` below.
    # (Its --sample is the count's sample size, not a trial's rows.)
    shared = ("input_path", "job", "labels", "output", "prices", "instructions", "effort",
              "models", "id_column", "text_column", "job_file")  # fmt: skip
    params = _run_parameters({name: given[name] for name in shared})
    plan = plan_or_say(params)
    if isinstance(plan, int):
        raise typer.Exit(plan)
    definition = plan.spec.definition
    names = estimating.candidate_models(definition, model, plan.models)
    if not names:
        say("error: --model is empty")
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        specs = [plan.spec_for(name) for name in names]
    except ValueError as exc:
        say(f"error: {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    say(f"{len(plan.rows.frame):,} rows in {input_path}: estimating {definition.name} for "
        f"{', '.join(names)}")  # fmt: skip
    try:
        with api_target() as target:
            result = asyncio.run(
                estimating.estimate(
                    plan.rows, plan.prompts, specs, plan.prices, backend=target,
                    output_dir=output, sample_size=sample,
                )
            )  # fmt: skip
    except EstimateError as exc:
        say(f"error: {exc}")
        raise typer.Exit(exit_code(exc)) from None
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
    else:
        estimating.render(result)
    raise typer.Exit(EXIT_FAILED if result.failed else EXIT_OK)


@app.command("eval")
def evaluate(
    input_path: InputPath,
    truth: Annotated[
        str,
        typer.Option(
            help="Known answers (CSV, JSON, JSONL, Parquet): the id column and `expected` for "
            "a label job; for a json job, a column per top-level property to check."
        ),
    ] = ...,  # type: ignore[assignment]
    models: Annotated[
        str,
        typer.Option(
            "--models",
            help="Candidates, comma-separated: models, or cascades as "
            "MODEL+STRONGER_MODEL (e.g. claude-haiku-5-5,claude-haiku-5-5+claude-sonnet-5-5).",
        ),
    ] = ...,  # type: ignore[assignment]
    job: JobOption = "classify",
    job_file: JobFileOption = None,
    sample: Annotated[
        int, typer.Option(help="Rows scored: a seeded random N of those with known answers.")
    ] = 200,
    target: Annotated[
        float, typer.Option(help="Accuracy the recommended model must reach (0-1).")
    ] = 0.95,
    output: Annotated[
        str,
        typer.Option(help="Output directory: answers are stored there, so a re-run pays nothing."),
    ] = DEFAULT["output"],
    id_column: IdColumn = None,
    model_table: Annotated[str | None, typer.Option("--model-table", help=_help("models"))] = None,
    prices: PricesOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
) -> None:
    """Is the cheap model good enough? Run a label or json job on a seeded sample of
    INPUT_PATH with each candidate model (or cascade), score the answers against known ones,
    and recommend the cheapest that reaches --target.

    Without ANTHROPIC_API_KEY it runs on the built-in simulator and says so.
    """
    from aibatch.app.local import evaluate_locally, say
    from aibatch.errors import EXIT_BAD_INPUT
    from aibatch.runs.evaluation import EvalParameters

    if job not in JOBS:
        say(f"error: --job must be one of {', '.join(JOBS)}, not {job!r}")
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        params = EvalParameters(
            input_path=input_path, truth_path=truth, job=job, job_file=job_file,
            models=[m for m in models.split(",") if m.strip()], sample=sample, target=target,
            output_dir=output, id_column=id_column, models_path=model_table,
            prices_path=prices,
        )  # fmt: skip
    except ValidationError as exc:
        eval_options = {f: option_name(f) for f in EvalParameters.model_fields} | {
            "truth_path": "--truth", "output_dir": "--output", "models_path": "--model-table"
        }  # fmt: skip
        say(f"error: {option_errors(exc, eval_options)}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    from aibatch.app.local import prefect_environment

    prefect_environment()  # before Prefect is imported: it reads its settings once, then
    from aibatch.flows.evaluate import evaluate as eval_flow  # Prefect loads in seconds

    raise typer.Exit(evaluate_locally(params, eval_flow, as_json))


@app.command("status")
def status(
    output: Annotated[
        str, typer.Argument(help="The output directory.", show_default=True)
    ] = DEFAULT["output"],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """What an output directory holds, job by job: results, failed rows by error type, cost,
    models and prompt versions, the last run, open Message Batches. Sends nothing."""
    import json

    from aibatch.app.local import say
    from aibatch.errors import EXIT_BAD_INPUT
    from aibatch.runs.status import output_status, render

    try:
        jobs = output_status(output)
    except FileNotFoundError as exc:
        say(f"error: {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if as_json:
        typer.echo(json.dumps({"output": output, "jobs": [j.as_dict() for j in jobs]}, indent=2))
    else:
        render(output, jobs)
