"""The benchmark scenarios that need the whole flow and a Prefect server (P4, P6, O45, OP,
and P2's `aibatch-run` contestant).

Each `aibatch run` is its own process talking to one `prefect server` on 127.0.0.1 and to
a simulator process, exactly as a user's runs would; peak RSS is read from the kernel's
accounting of that process (`wait4`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from aibatch.simulator import SimulatorConfig
from aibatch.simulator.process import SimulatorProcess
from aibatch.testing.prefect_server import PrefectServerProcess
from aibatch.testing.s3_server import S3ServerProcess


@dataclass
class CliRun:
    returncode: int
    wall_s: float
    peak_rss_mib: float
    timed_out: bool = False


def start_run(
    args: list[str], env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], float]:
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "aibatch", "run", *args, "--no-progress"],
            env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    return process, time.perf_counter()


def wait_run(
    process: subprocess.Popen[bytes], started: float, timeout_s: float | None = None
) -> CliRun:
    """Reap the child ourselves: wait4 returns its own resource usage (peak RSS). Past
    `timeout_s` it gets SIGTERM, and SIGKILL 30 s later (`timed_out`)."""
    timed_out = False
    if timeout_s is None:
        _, status, usage = os.wait4(process.pid, 0)
    else:
        reaped = _reap_by(process.pid, started + timeout_s)
        if reaped is None:
            timed_out = True
            # os.kill, not Popen.terminate: that polls, and could reap it before wait4 does.
            os.kill(process.pid, signal.SIGTERM)
            reaped = _reap_by(process.pid, time.perf_counter() + 30)
        if reaped is None:
            os.kill(process.pid, signal.SIGKILL)
            _, status, usage = os.wait4(process.pid, 0)
        else:
            status, usage = reaped
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    return CliRun(process.returncode, wall, usage.ru_maxrss / 1024, timed_out)


def _reap_by(pid: int, deadline: float) -> tuple[int, Any] | None:
    """(status, rusage) once `pid` exits, or None if it still runs at `deadline`."""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        if time.perf_counter() >= deadline:
            return None
        time.sleep(0.02)


def client_env(server: PrefectServerProcess, sim: SimulatorProcess) -> dict[str, str]:
    return {**server.env, "ANTHROPIC_API_KEY": "bench", "ANTHROPIC_BASE_URL": sim.base_url}


def result_times(output: Path | str, s3: S3ServerProcess | None = None) -> pd.Series:
    """Completion times (epoch seconds) of every result row under `output` (a folder, or
    an s3:// prefix on the benchmark's S3 server)."""
    if s3 is None:
        where, filesystem = str(Path(output) / "classify" / "results"), None
    else:
        where = f"{str(output).removeprefix('s3://')}/classify/results"
        filesystem = pafs.S3FileSystem(endpoint_override=s3.endpoint_url, region="us-east-1",
                                       access_key=s3.env["AWS_ACCESS_KEY_ID"],
                                       secret_key=s3.env["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    table = ds.dataset(
        where, filesystem=filesystem, format="parquet", partitioning="hive"
    ).to_table(columns=["id", "completed_at"])
    frame = table.to_pandas()
    if frame["id"].duplicated().any():
        raise AssertionError(f"an id appears twice in {output}/classify/results")
    times: pd.Series = frame["completed_at"].map(lambda t: t.timestamp())
    return times


def scale(
    server: PrefectServerProcess,
    tickets: pd.DataFrame,
    work: Path,
    chunk_size: int,
    in_bucket: bool = False,
) -> list[dict[str, Any]]:
    """P4: every ticket through the full flow at zero latency, then the re-run. P4s: the
    same with the output in a bucket (moto's S3 server on loopback, started here)."""
    scenario = "P4s" if in_bucket else "P4"
    source = work / f"{scenario.lower()}-tickets.csv"
    tickets.to_csv(source, index=False)
    log = work / f"{scenario.lower()}.log"
    with contextlib.ExitStack() as running:
        s3 = running.enter_context(S3ServerProcess()) if in_bucket else None
        output: Path | str = (
            f"s3://{s3.new_bucket('p4s')}/output" if s3 else work / f"{scenario.lower()}-output"
        )
        args = [str(source), "--job", "classify", "--output", str(output),
                "--chunk-size", str(chunk_size)]  # fmt: skip
        sim = running.enter_context(SimulatorProcess(SimulatorConfig()))
        env = {**client_env(server, sim), **(s3.env if s3 else {})}
        first = wait_run(*start_run(args, env, log))
        first_stats = sim.stats()
        sim.reset()
        again = wait_run(*start_run(args, env, log))
        again_stats = sim.stats()
        if first.returncode or again.returncode:
            raise RuntimeError(
                f"{scenario}: aibatch run exited {first.returncode}/{again.returncode}; see {log}"
            )
        done = len(result_times(output, s3))
    count = len(tickets)
    common = {"scenario": scenario, "ceiling_per_s": None, "pct_of_ceiling": None,
              "settled_concurrency": None}  # fmt: skip
    return [
        {**common, "contestant": "aibatch-flow", "items": count,
         "items_per_s": round(done / first.wall_s, 2),
         "share_429": 0.0, "attempts_per_item": round(first_stats["requests_total"] / count, 3),
         "lost": count - done, "peak_rss_mib": round(first.peak_rss_mib, 1),
         "max_in_flight": first_stats["max_in_flight"], "wall_s": round(first.wall_s, 1),
         "api_calls": first_stats["requests_total"]},
        {**common, "contestant": "aibatch-flow-rerun", "items": count, "items_per_s": None,
         "share_429": 0.0, "attempts_per_item": round(again_stats["requests_total"] / count, 3),
         "lost": count - done, "peak_rss_mib": round(again.peak_rss_mib, 1),
         "max_in_flight": again_stats["max_in_flight"], "wall_s": round(again.wall_s, 1),
         "api_calls": again_stats["requests_total"]},
    ]  # fmt: skip


def shared_limit(
    server: PrefectServerProcess,
    tickets: pd.DataFrame,
    work: Path,
    cap_rpm: int,
    chunk_size: int,
) -> list[dict[str, Any]]:
    """P6: two flow runs at once, one shared Prefect rate limit of `cap_rpm`.

    The simulator enforces the same cap (as the API does: a bucket holding 2 s of it) and
    sends no rate-limit headers, so only the shared limit can keep the two runs under it
    together: any 429 would mean they went over. The combined rate is measured while both
    were running.
    """
    halves = [tickets.iloc[: len(tickets) // 2], tickets.iloc[len(tickets) // 2 :]]
    config = SimulatorConfig(rpm=cap_rpm, burst_seconds=2, latency_ms=200,
                             send_ratelimit_headers=False)  # fmt: skip
    outputs = [work / f"p6-output-{i}" for i in range(2)]
    with SimulatorProcess(config) as sim:
        env = client_env(server, sim)
        started = []
        for i, half in enumerate(halves):
            source = work / f"p6-tickets-{i}.csv"
            half.to_csv(source, index=False)
            args = [str(source), "--job", "classify", "--output", str(outputs[i]),
                    "--chunk-size", str(chunk_size), "--shared-rpm", str(cap_rpm)]  # fmt: skip
            started.append(start_run(args, env, work / f"p6-{i}.log"))
        runs = [wait_run(*s) for s in started]
        stats = sim.stats()
    if any(r.returncode for r in runs):
        raise RuntimeError(f"P6: aibatch run exited {[r.returncode for r in runs]}; see {work}")
    times = [result_times(o) for o in outputs]
    # The window in which both runs were sending: from the later first answer to the
    # earlier last one.
    begin = max(t.min() for t in times)
    end = min(t.max() for t in times)
    inside = sum(int(((t >= begin) & (t <= end)).sum()) for t in times)
    combined = inside / (end - begin) if end > begin else 0.0
    per_second = pd.Series(stats["ok_per_second"], dtype=float)
    per_second.index = per_second.index.astype(int)
    busiest_10s = per_second.sort_index().rolling(10, min_periods=10).sum().max() / 10
    requests = stats["requests_total"]
    done = sum(len(t) for t in times)
    return [{
        "scenario": "P6", "contestant": "2 flow runs, shared limit", "items": len(tickets),
        "items_per_s": round(combined, 2), "ceiling_per_s": round(cap_rpm / 60, 2),
        "pct_of_ceiling": round(100 * combined / (cap_rpm / 60), 1),
        "share_429": round(stats["by_status"].get("429", 0) / requests, 4) if requests else 0,
        "attempts_per_item": round(requests / len(tickets), 3), "lost": len(tickets) - done,
        "peak_rss_mib": round(max(r.peak_rss_mib for r in runs), 1),
        "settled_concurrency": None, "max_in_flight": stats["max_in_flight"],
        "wall_s": round(max(r.wall_s for r in runs), 1),
        "busiest_10s_per_s": round(float(busiest_10s), 2) if busiest_10s == busiest_10s else None,
        "overlap_s": round(end - begin, 1),
    }]  # fmt: skip


# -- runs through the CLI, measured from the simulator's side ----------------------------------


def read_results(output: Path) -> pd.DataFrame:
    """Every result row under `output` (id, completed_at, latency_ms); empty if none."""
    path = output / "classify" / "results"
    columns = ["id", "completed_at", "latency_ms"]
    dataset = ds.dataset(path, format="parquet", partitioning="hive") if path.exists() else None
    if dataset is None or not dataset.files:  # a run that answered nothing
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    frame: pd.DataFrame = dataset.to_table(columns=columns).to_pandas()
    return frame


def classify_run(
    server: PrefectServerProcess,
    sim: SimulatorProcess,
    source: Path,
    output: Path,
    log: Path,
    timeout_s: float,
    extra_args: list[str] | None = None,
) -> tuple[CliRun, pd.DataFrame]:
    """`aibatch run SOURCE --job classify --output OUTPUT` against `sim`, on the benchmark's
    Prefect server (so no temporary one starts); its results as read back."""
    args = [str(source), "--job", "classify", "--output", str(output), *(extra_args or [])]
    run = wait_run(*start_run(args, client_env(server, sim), log), timeout_s=timeout_s)
    return run, read_results(output)


def log_tail(log: Path, lines: int = 15) -> list[str]:
    if not log.exists():
        return []
    return log.read_text(errors="replace").splitlines()[-lines:]


def cli_fault(
    scenario: str,
    server: PrefectServerProcess,
    config: SimulatorConfig,
    tickets: pd.DataFrame,
    work: Path,
    timeout_s: float,
    extra_args: list[str] | None = None,
) -> dict[str, Any]:
    """O45, OP: one `aibatch run` through a simulator whose outages (every message a 529)
    are timed from the simulator's start; the run starts right after it."""
    source, output = work / f"{scenario}-tickets.csv", work / f"{scenario}-output"
    log = work / f"{scenario}.log"
    tickets.to_csv(source, index=False)
    with SimulatorProcess(config) as sim:
        run, results = classify_run(server, sim, source, output, log, timeout_s, extra_args)
        stats = sim.stats()
        sim_started = time.time() - stats["uptime_s"]  # the simulator's clock, in epoch s
    count = len(tickets)
    requests = stats["requests_total"]
    ids = results["id"]
    tail = log_tail(log)
    for line in tail[-5:]:
        print(f"  {scenario}| {line}", file=sys.stderr, flush=True)
    first = stats.get("first_message_at")
    return {
        "scenario": scenario, "contestant": "aibatch-run", "items": count,
        "items_per_s": round(ids.nunique() / run.wall_s, 2),
        "share_429": round(stats["by_status"].get("429", 0) / requests, 4) if requests else 0,
        "attempts_per_item": round(requests / count, 3), "lost": count - ids.nunique(),
        "peak_rss_mib": round(run.peak_rss_mib, 1), "max_in_flight": stats["max_in_flight"],
        "wall_s": round(run.wall_s, 1),
        "exit_code": "timeout" if run.timed_out else run.returncode,
        "ids_once": bool(not ids.duplicated().any() and set(ids) == set(tickets["id"])),
        "outage_answers": stats.get("outage_answers"),
        "first_msg_sim_s": round(first - sim_started, 1) if first is not None else None,
        "overload_named": any("overload" in line.lower() for line in tail),
    }  # fmt: skip
