"""Throughput benchmark: aibatch against the patterns it replaces, on the same simulator.

    python benchmarks/throughput.py            # full run (tens of minutes)
    python benchmarks/throughput.py --quick    # smaller scenarios, a few minutes

Every contestant runs in its own forked process (so peak RSS is its own) against a fresh
simulator process with the scenario's settings. Printed as one table and written to
benchmarks/results/throughput.{csv,json}. Figures are ratios measured in one run: items/s
against the scenario's ceiling, the share of HTTP requests answered 429, HTTP attempts
per item, items lost.

Scenarios (see issue text in the README's "Throughput" section):
  P1  rate-bound: 600 RPM enforced over 2 s windows, 200 ms latency; no limits given.
  P1b the same with no rate-limit headers, the limit a sliding window (stricter than the
      documented bucket: no refill inside the window), 429s with whole-second retry-after.
  P1c P1b with 429s that carry no retry-after.
  P2  latency-bound: no limit, lognormal latency with median 200 ms; with `aibatch run`
      itself as a contestant (aibatch-run), compared by `server_per_s` (answers per second
      from the simulator's first message to its last answer: without the CLI's start-up):
      >= 1.2x plain-50's and >= 1.0x the best plain-N's.
  P3  overhead: zero latency; aibatch against a bare SDK loop.
  P5  token-bound: input and output tokens per minute are the binding limits.
  P7  the limit halves mid-run (another client starts on the key), no headers.
  P8  the limit doubles mid-run, without headers (P8) and with them (P8h).
  S   a 30 s 429 storm mid-run: how many attempts each ticket makes during it.
  K2  two runs on one key at once (P1b's strict limit, two forked aibatch-auto engines,
      600 tickets each): together >= 95% of the ceiling over their common span, <= 5% 429s,
      0 lost; each one's items/s against its fair share. K2h the same with rate-limit headers.
  TK  the token limit stated only in the combined anthropic-ratelimit-tokens-* headers
      (1,200 RPM, 150k ITPM): <= 5% 429s, 0 lost, attempts per ticket, % of the token limit.
  O45 a 45 s outage (every message a 529) in a 400-ticket `aibatch run`: exit 0, every id
      once, <= 20% of the tickets in requests answered during the outage.
  OP  a permanent outage, `aibatch run --outage-deadline 20` on 20 tickets: exit 3, <= 3
      requests per ticket, the last lines name the overload.
  The `target` column checks these targets in each row they apply to (ok, MISS, n/a).
  The `aibatch run` contestants (P2's, O45, OP) use the Prefect server started for P4/P6.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import anthropic
import flow_scenarios
import pandas as pd

from aibatch.engine.backend import ApiTarget
from aibatch.engine.processor import RowProcessor
from aibatch.engine.stats import RunStats
from aibatch.errors import ChunkIncomplete
from aibatch.jobs.spec import JobSpec
from aibatch.output.committer import Committer
from aibatch.output.store import ResultStore
from aibatch.simulator import SimulatorConfig
from aibatch.simulator.process import SimulatorProcess
from aibatch.testing.prefect_server import PrefectServerProcess

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SPEC = JobSpec.build("classify", "claude-haiku-4-5", None)
FORK = multiprocessing.get_context("fork")


# A rate limit as strict as a real server may be, and stricter than the documented bucket:
# 600 RPM over 2 s sliding windows, no rate-limit headers (a proxy stripped them), 429s
# with retry-after in whole seconds (rounded up, as the API sends it).
STRICT: dict[str, Any] = {"rpm": 600, "burst_seconds": 2, "latency_ms": 200,
                          "window": "sliding", "send_ratelimit_headers": False}  # fmt: skip

# `aibatch run` itself as a contestant (a subprocess on the benchmark's Prefect server).
CLI = "aibatch-run"
CLI_TIMEOUT_S = 900.0

# The targets of the scenarios below, checked in each row's `target` column.
TOGETHER_TARGETS = {"pct_of_ceiling": (">=", 95), "share_429": ("<=", 0.05), "lost": ("==", 0)}
TK_TARGETS = {"share_429": ("<=", 0.05), "lost": ("==", 0)}
OP_TARGETS = {"exit_code": ("==", 3), "attempts_per_item": ("<=", 3),
              "overload_named": ("==", True)}  # fmt: skip


def o45_targets(tickets: int) -> dict[str, tuple[str, Any]]:
    return {"exit_code": ("==", 0), "ids_once": ("==", True),
            "outage_answers": ("<=", tickets // 5)}  # fmt: skip


# A server that states its token limit only in the combined anthropic-ratelimit-tokens-*
# headers (no input-tokens ones), where input tokens bind before requests do.
TK_SIM: dict[str, Any] = {"rpm": 1_200, "itpm": 150_000, "burst_seconds": 2, "latency_ms": 200,
                          "ratelimit_header_set": "tokens"}  # fmt: skip
# A permanent outage: every message a 529, for as long as the run lasts.
OP_SIM: dict[str, Any] = {"latency_ms": 200, "outages": [{"start_s": 0, "duration_s": 100_000}]}
OP_ARGS = ["--outage-deadline", "20"]


def scenarios(quick: bool) -> dict[str, dict[str, Any]]:
    """The issue's scenarios, in the order they run; `quick` keeps their shape with fewer
    tickets, faster limits and fewer contestants (a CI smoke run, not a measurement), and
    runs the rate-bound ones first, while the Prefect server starts."""
    if quick:
        return {
            "P1": {
                "sim": {"rpm": 1_200, "burst_seconds": 2, "latency_ms": 200},
                "tickets": 200,
                "ceiling": 20.0,
                "contestants": ["aibatch-auto"],
            },
            "P1b": {
                "sim": {**STRICT, "rpm": 1_200},
                "tickets": 200,
                "ceiling": 20.0,
                "contestants": ["aibatch-auto"],
            },
            "P5": {
                "sim": {"itpm": 360_000, "otpm": 36_000, "burst_seconds": 2, "latency_ms": 100},
                "tickets": 200,
                "ceiling": "tokens",
                "contestants": ["aibatch-auto"],
            },
            "P2": {
                "sim": {"latency_ms": 200, "latency_sigma": 0.3},
                "tickets": 500,
                "ceiling": None,
                "contestants": ["plain-50", "aibatch-auto", CLI],
            },
            "P3": {
                "sim": {},
                "tickets": 1_000,
                "ceiling": None,
                "contestants": ["bare-sdk-32", "aibatch-auto"],
            },
            "P4": {"flow": "scale", "tickets": 500, "chunk_size": 250},
            "P4s": {"flow": "scale", "tickets": 500, "chunk_size": 250, "bucket": True},
            "P6": {"flow": "shared", "tickets": 400, "cap_rpm": 2_400, "chunk_size": 50},
            "K2": {"pair": True, "sim": {**STRICT, "rpm": 1_200}, "tickets": 300,
                   "ceiling": 20.0, "max_attempts": 6, "contestants": ["aibatch-auto"]},
            "K2h": {"pair": True, "sim": {**STRICT, "rpm": 1_200, "send_ratelimit_headers": True},
                    "tickets": 300, "ceiling": 20.0, "max_attempts": 6,
                    "contestants": ["aibatch-auto"]},
            "TK": {"sim": TK_SIM, "tickets": 300, "ceiling": "tokens", "max_attempts": 6,
                   "contestants": ["aibatch-auto"]},
            # The outage shortened to 15 s (and the limit doubled) to stay under a minute.
            "O45": {"cli": True, "tickets": 200, "timeout_s": 300,
                    "sim": {"rpm": 1_200, "burst_seconds": 2, "latency_ms": 200,
                            "outages": [{"start_s": 8, "duration_s": 15}]}},
            "OP": {"cli": True, "tickets": 20, "timeout_s": 300, "args": OP_ARGS,
                   "sim": OP_SIM},
        }  # fmt: skip
    n = 1_000
    return {
        "P1": {"sim": {"rpm": 600, "burst_seconds": 2, "latency_ms": 200}, "tickets": n,
               "ceiling": 10.0,
               "contestants": ["sequential", "plain-20", "plain-50", "aibatch-20", "aibatch-auto"]},
        "P1b": {"sim": STRICT, "tickets": n, "ceiling": 10.0,
                "contestants": ["plain-20", "plain-50", "aibatch-auto"]},
        "P1c": {"sim": {**STRICT, "send_retry_after": False}, "tickets": n, "ceiling": 10.0,
                "contestants": ["aibatch-auto"]},
        "P2": {"sim": {"latency_ms": 200, "latency_sigma": 0.3}, "tickets": 1_500,
               "ceiling": None, "repeats": 3,
               "contestants": ["plain-20", "plain-50", "plain-100", "aibatch-50",
                               "aibatch-auto", CLI]},
        "P7": {"sim": {**STRICT, "rpm": 1_200}, "tickets": 1_500, "ceiling": 20.0,
               "change": (20.0, {"rpm": 600}), "contestants": ["aibatch-auto"]},
        "P8": {"sim": STRICT, "tickets": 1_500, "ceiling": 10.0,
               "change": (20.0, {"rpm": 1_200}), "contestants": ["aibatch-auto"]},
        "P8h": {"sim": {**STRICT, "send_ratelimit_headers": True}, "tickets": 1_500,
                "ceiling": 10.0, "change": (20.0, {"rpm": 1_200}),
                "contestants": ["aibatch-auto"]},
        "S": {"sim": {"rpm": 1_200, "burst_seconds": 2, "latency_ms": 200,
                      "storms": [{"start_s": 10.0, "duration_s": 30.0}]},
              "tickets": 1_200, "ceiling": None, "storm": (10.0, 30.0),
              "contestants": ["plain-50", "aibatch-auto"]},
        "P3": {"sim": {}, "tickets": 10_000, "ceiling": None,
               "contestants": ["bare-sdk-32", "aibatch-32", "aibatch-auto"]},
        "P5": {"sim": {"itpm": 90_000, "otpm": 9_000, "burst_seconds": 2, "latency_ms": 100},
               "tickets": n, "ceiling": "tokens",
               "contestants": ["plain-20", "aibatch-auto"]},
        "P4": {"flow": "scale", "tickets": 100_000, "chunk_size": 500},
        "P4s": {"flow": "scale", "tickets": 100_000, "chunk_size": 500, "bucket": True},
        "P6": {"flow": "shared", "tickets": 3_000, "cap_rpm": 1_200, "chunk_size": 100},
        "K2": {"pair": True, "sim": STRICT, "tickets": 600, "ceiling": 10.0, "max_attempts": 6,
               "contestants": ["aibatch-auto"]},
        "K2h": {"pair": True, "sim": {**STRICT, "send_ratelimit_headers": True},
                "tickets": 600, "ceiling": 10.0, "max_attempts": 6,
                "contestants": ["aibatch-auto"]},
        "TK": {"sim": TK_SIM, "tickets": 1_000, "ceiling": "tokens", "max_attempts": 6,
               "contestants": ["aibatch-auto"]},
        "O45": {"cli": True, "tickets": 400, "timeout_s": 900,
                "sim": {"rpm": 600, "burst_seconds": 2, "latency_ms": 200,
                        "outages": [{"start_s": 10, "duration_s": 45}]}},
        "OP": {"cli": True, "tickets": 20, "timeout_s": 600, "args": OP_ARGS, "sim": OP_SIM},
    }  # fmt: skip


def load_text_rows(count: int, first_lap: int = 0) -> list[tuple[str, str]]:
    """`count` tickets from the sample; `first_lap` > 0 gives other ids and prompts (a
    second client on the same key)."""
    frame = pd.read_csv(ROOT / "data" / "tickets.csv", dtype=str)
    rows = list(zip(frame["id"], frame["text"], strict=True))
    out = []
    for i in range(count):  # beyond the sample: same texts, distinct ids and prompts
        ticket_id, text = rows[i % len(rows)]
        lap = first_lap + i // len(rows)
        out.append((f"{ticket_id}-{lap}", f"{text} (#{lap})" if lap else text))
    return out


def tickets_csv(path: Path, count: int) -> Path:
    """The input file of a CLI contestant: columns id,text."""
    pd.DataFrame(load_text_rows(count), columns=["id", "text"]).to_csv(path, index=False)
    return path


# -- contestants (each runs in its own process) ----------------------------------------------


async def plain_loop(
    base_url: str,
    tickets: list[tuple[str, str]],
    concurrency: int,
    done_at: list[float],
    latencies_s: list[float],
    sdk_retries: int = 2,
    own_attempts: int = 3,
    aiohttp: bool = False,
) -> int:
    """The pattern aibatch replaces: one semaphore, a retry loop, gather; failures → None."""
    http_client = anthropic.DefaultAioHttpClient(timeout=60.0) if aiohttp else None
    client = anthropic.AsyncAnthropic(
        base_url=base_url, api_key="bench", max_retries=sdk_retries, http_client=http_client
    )
    semaphore = asyncio.Semaphore(concurrency)

    async def one(text: str) -> Any:
        async with semaphore:
            for attempt in range(own_attempts):
                try:
                    sent = time.time()
                    answer = await client.messages.create(**SPEC.request(text))
                    done_at.append(time.time())
                    latencies_s.append(done_at[-1] - sent)
                    return answer
                except anthropic.APIStatusError:
                    await asyncio.sleep(2**attempt)
                except anthropic.APIConnectionError:
                    await asyncio.sleep(2**attempt)
            return None

    answers = await asyncio.gather(*(one(t) for _, t in tickets))
    await client.close()
    return sum(a is not None for a in answers)


async def bare_sdk(
    base_url: str,
    tickets: list[tuple[str, str]],
    concurrency: int,
    done_at: list[float],
    latencies_s: list[float],
) -> int:
    """The floor: the SDK with no retries and nothing around it, on the transport aibatch
    uses (aiohttp), so that the gap to aibatch is the engine's own cost."""
    return await plain_loop(
        base_url, tickets, concurrency, done_at, latencies_s, sdk_retries=0, own_attempts=1,
        aiohttp=True,
    )  # fmt: skip


async def aibatch_engine(
    base_url: str,
    tickets: list[tuple[str, str]],
    concurrency: int | None,
    done_at: list[float],
    latencies_s: list[float],
    max_attempts: int = 50,
) -> tuple[int, dict[str, Any]]:
    """aibatch's engine as the flow runs it: pacer, controller, journal and commits."""
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(tmp, SPEC.job)
        with store.locked():
            carried = pd.DataFrame(index=pd.Index([], name="id"))
            committer = Committer.open(store, "bench", carried)
            backend = ApiTarget("bench", base_url).connect()
            stats = RunStats(total=len(tickets))
            processor = RowProcessor.with_defaults(
                backend, SPEC, committer, "bench", stats=stats, max_concurrency=concurrency,
                max_attempts=max_attempts,
            )  # fmt: skip
            chunk = 200
            limits: list[tuple[float, int]] = []  # (time, concurrency limit) every 50 ms

            async def sample_limit() -> None:
                while True:
                    limits.append((time.time(), processor.admission.concurrency.current))
                    await asyncio.sleep(0.05)

            async def chunk_of(part: list[tuple[str, str]]) -> None:
                # Each chunk to its end: one that gives up does not end the others early.
                with contextlib.suppress(ChunkIncomplete):  # unfinished ones count as lost
                    await processor.process_chunk(part)

            sampler = asyncio.create_task(sample_limit())
            await asyncio.gather(*(
                chunk_of(tickets[i : i + chunk]) for i in range(0, len(tickets), chunk)
            ))  # fmt: skip
            sampler.cancel()
            await committer.commit()
            committer.close()
            await backend.aclose()
            attempts: list[int] = []
            if stats.ok:
                finished = pd.read_parquet(store.results_dir, columns=["completed_at", "attempts"])
                done_at.extend(finished["completed_at"].map(lambda t: t.timestamp()))
                attempts = finished["attempts"].tolist()
                latencies_s.extend(ms / 1000 for ms in stats.latencies_ms)
            extra = {"settled_concurrency": settled(limits, done_at), "attempts": attempts,
                     "storms": processor.admission.gate.storms,
                     "learned_rpm": processor.admission.pacer.requests.limit_per_min
                     if processor.admission.pacer.requests else None}  # fmt: skip
            return stats.ok, extra


def steady_rate(done_at: list[float]) -> float | None:
    """Items/s between the 10th and 90th percentile completions: the rate once ramped up,
    without the start and the tail."""
    if len(done_at) < 20:
        return None
    ordered = sorted(done_at)
    first, last = ordered[len(ordered) // 10], ordered[len(ordered) * 9 // 10]
    return (len(ordered) * 8 // 10) / (last - first) if last > first else None


def settled(limits: list[tuple[float, int]], done_at: list[float]) -> int | None:
    """The median concurrency limit while the run was ramped up (10th to 90th percentile
    completions): what `auto` settled on, not where the tail left it."""
    if len(done_at) < 20:
        return limits[-1][1] if limits else None
    ordered = sorted(done_at)
    first, last = ordered[len(ordered) // 10], ordered[len(ordered) * 9 // 10]
    inside = sorted(limit for t, limit in limits if first <= t <= last)
    return inside[len(inside) // 2] if inside else None


def run_contestant(
    name: str,
    base_url: str,
    count: int,
    max_attempts: int = 50,
    first_lap: int = 0,
    start_at: float | None = None,
) -> dict[str, Any]:
    """One contestant's run; with `start_at` (epoch seconds) it starts then, not now."""
    tickets = load_text_rows(count, first_lap)
    kind, _, size = name.partition("-")
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    done_at: list[float] = []
    latencies: list[float] = []
    if kind == "sequential":
        tickets = tickets[: max(20, count // 10)]  # its rate, on a tenth of the items
        ok = asyncio.run(plain_loop(base_url, tickets, 1, done_at, latencies))
    elif kind == "plain":
        ok = asyncio.run(plain_loop(base_url, tickets, int(size), done_at, latencies))
    elif kind == "bare":
        width = int(size.removeprefix("sdk-"))
        ok = asyncio.run(bare_sdk(base_url, tickets, width, done_at, latencies))
    else:
        concurrency = None if size == "auto" else int(size)
        ok, extra = asyncio.run(
            aibatch_engine(base_url, tickets, concurrency, done_at, latencies, max_attempts)
        )
    wall = time.perf_counter() - started
    return {
        "items": len(tickets), "ok": ok, "wall_s": wall, "steady_per_s": steady_rate(done_at),
        "mean_latency_s": sum(latencies) / len(latencies) if latencies else None,
        "done_at": done_at,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra,
    }  # fmt: skip


# -- the driver --------------------------------------------------------------------------------


def _contestant_child(
    name: str, base_url: str, count: int, options: dict[str, Any], conn: Connection
) -> None:
    try:
        conn.send(run_contestant(name, base_url, count, **options))
    except BaseException as exc:  # reported by the parent, which raises
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


Forked = tuple[str, Any, Connection]


def start_forked(name: str, base_url: str, count: int, **options: Any) -> Forked:
    """One contestant in a forked child: its own peak RSS, without re-importing the SDK
    (a fresh interpreter costs ~5 s of imports here, per contestant). `options` go to
    `run_contestant`."""
    receiver, sender = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_contestant_child, args=(name, base_url, count, options, sender))
    child.start()
    sender.close()
    return name, child, receiver


def run_forked(name: str, base_url: str, count: int, **options: Any) -> dict[str, Any]:
    return collect_forked(start_forked(name, base_url, count, **options))


def collect_forked(forked: Forked) -> dict[str, Any]:
    name, child, receiver = forked
    try:
        run: dict[str, Any] = receiver.recv()
    except EOFError:
        child.join()
        run = {"error": f"the contestant died (exit code {child.exitcode})"}
    child.join()
    if "error" in run:
        raise RuntimeError(f"{name} failed: {run['error']}")
    return run


def recovery_s(done_at: list[float], since: float, ceiling: float) -> float | None:
    """Seconds from `since` until completions stay at 90% of `ceiling` or more: the end of
    the last 2 s window below that (windows every 0.5 s, up to the 90th percentile
    completion, so the run's tail does not count); 0 if none was below."""
    ordered = sorted(done_at)
    end = ordered[len(ordered) * 9 // 10] if ordered else since
    last_low = None
    start = since
    while start + 2.0 <= end:
        inside = sum(1 for t in ordered if start <= t < start + 2.0)
        if inside < 0.9 * ceiling * 2.0:
            last_low = start
        start += 0.5
    if start == since:
        return None  # the run ended before the change
    return 0.0 if last_low is None else round(last_low + 2.0 - since, 1)


def server_rate(stats: dict[str, Any]) -> float | None:
    """Items answered per second from the first message the simulator received to its last
    answer: a run's speed without its start-up (None if the simulator does not say)."""
    first, last = stats.get("first_message_at"), stats.get("last_answer_at")
    if first is None or last is None or last <= first:
        return None
    answered: int = stats["by_status"].get("200", 0)
    return round(answered / (float(last) - float(first)), 2)


def cli_contestant(
    server: PrefectServerProcess, sim: SimulatorProcess, count: int, work: Path
) -> dict[str, Any]:
    """`aibatch run` itself as a contestant: the CLI in its own process, Python and Prefect
    start-up included in its wall time, on the benchmark's Prefect server."""
    here = Path(tempfile.mkdtemp(prefix="cli-", dir=work))
    run, results = flow_scenarios.classify_run(
        server, sim, tickets_csv(here / "tickets.csv", count), here / "output",
        here / "run.log", timeout_s=CLI_TIMEOUT_S,
    )  # fmt: skip
    if run.returncode or run.timed_out:
        print(f"warning: aibatch run exited {run.returncode} (timed out: {run.timed_out}); "
              f"see {here / 'run.log'}", file=sys.stderr, flush=True)  # fmt: skip
    done_at = results["completed_at"].map(lambda t: t.timestamp()).tolist()
    latencies = results["latency_ms"].dropna()
    return {
        "items": count, "ok": results["id"].nunique(), "wall_s": run.wall_s,
        "steady_per_s": steady_rate(done_at),
        "mean_latency_s": float(latencies.mean()) / 1000 if len(latencies) else None,
        "done_at": done_at, "peak_rss_mib": run.peak_rss_mib,
        "exit_code": "timeout" if run.timed_out else run.returncode,
    }  # fmt: skip


def measure(
    scenario: str,
    spec: dict[str, Any],
    name: str,
    server: PrefectServerProcess | None = None,
    work: Path | None = None,
) -> dict[str, Any]:
    config = SimulatorConfig(**spec["sim"])
    with SimulatorProcess(config) as sim:
        started = time.time()
        change = spec.get("change")
        timer = None
        if change is not None:  # the limit moves while the contestant runs
            timer = threading.Timer(change[0], sim.configure, kwargs=change[1])
            timer.start()
        if name == CLI:
            assert server is not None and work is not None
            run = cli_contestant(server, sim, spec["tickets"], work)
        else:
            run = run_forked(name, sim.base_url, spec["tickets"],
                             max_attempts=spec.get("max_attempts", 50))  # fmt: skip
        if timer is not None:
            timer.cancel()
        stats = sim.stats()
    requests = stats["requests_total"]
    rate = run["ok"] / run["wall_s"]
    row: dict[str, Any] = {
        "scenario": scenario, "contestant": name, "items": run["items"],
        "items_per_s": round(rate, 2),
        "steady_per_s": round(run["steady_per_s"], 2) if run["steady_per_s"] else None,
        "ceiling_per_s": None, "pct_of_ceiling": None,
        "share_429": round(stats["by_status"].get("429", 0) / requests, 4) if requests else 0,
        "attempts_per_item": round(requests / run["items"], 3),
        "lost": run["items"] - run["ok"], "peak_rss_mib": round(run["peak_rss_mib"], 1),
        "settled_concurrency": run.get("settled_concurrency"),
        "max_in_flight": stats["max_in_flight"], "wall_s": round(run["wall_s"], 1),
    }  # fmt: skip
    ceiling = spec["ceiling"]
    if change is not None:
        # Capacity over the run: the old ceiling until the change, the new one after it.
        at, new = change[0], change[1]["rpm"] / 60
        capacity = ceiling * min(at, run["wall_s"]) + new * max(0.0, run["wall_s"] - at)
        row["ceiling_per_s"] = f"{ceiling:g} then {new:g}"
        row["pct_of_ceiling"] = round(100 * run["ok"] / capacity, 1)
        row["recovery_s"] = recovery_s(run["done_at"], started + at, new)
        ceiling = None
    if "storm" in spec and run.get("attempts"):
        row["max_attempts_per_ticket"] = max(run["attempts"])
        row["storms_seen"] = run.get("storms")
    if "storm" in spec:
        row["requests_in_storm"] = stats["by_status"].get("429", 0)
    if scenario == "TK":
        row["max_attempts_per_ticket"] = max(run["attempts"]) if run.get("attempts") else None
    if ceiling == "tokens":
        # Tokens per minute used over the run, against each token limit the server has.
        minutes = run["wall_s"] / 60
        sim_cfg = spec["sim"]
        used = max(stats[f"{kind}_tokens"] / minutes / sim_cfg[limit]
                   for kind, limit in (("input", "itpm"), ("output", "otpm"))
                   if sim_cfg.get(limit))  # fmt: skip
        row["ceiling_per_s"] = round(rate / used, 2) if used else None
        row["pct_of_ceiling"] = round(100 * used, 1)
    elif ceiling is not None:
        row["ceiling_per_s"] = ceiling
        row["pct_of_ceiling"] = round(100 * rate / ceiling, 1)
    elif scenario == "P2" and name == CLI:
        # Its concurrency is not visible from outside: no Little's-law ceiling. Compared by
        # `server_per_s` instead (run_scenario), its start-up left out.
        if run["mean_latency_s"]:
            row["mean_latency_ms"] = round(run["mean_latency_s"] * 1000, 1)
    elif scenario == "P2":
        # Little's law at the concurrency in use: C in flight at the latency the client
        # observes carries C / latency. (Against the server's configured mean latency
        # instead, `pct_of_nominal`: that also charges the client's own per-request CPU.)
        sim_cfg = spec["sim"]
        nominal_s = sim_cfg["latency_ms"] / 1000 * math.exp(sim_cfg["latency_sigma"] ** 2 / 2)
        used = run.get("settled_concurrency") or int(name.rsplit("-", 1)[1])
        row["settled_concurrency"] = used
        steady = run["steady_per_s"] or rate
        row["ceiling_per_s"] = round(used / run["mean_latency_s"], 2)
        row["pct_of_ceiling"] = round(100 * steady / row["ceiling_per_s"], 1)
        row["pct_of_nominal"] = round(100 * steady * nominal_s / used, 1)
        row["mean_latency_ms"] = round(run["mean_latency_s"] * 1000, 1)
    if scenario == "P2":
        row["server_per_s"] = server_rate(stats)
    if "exit_code" in run:
        row["exit_code"] = run["exit_code"]
    return row


def measure_pair(scenario: str, spec: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """K2, K2h: two runs of `name` on one key (one simulator), started at the same moment
    in two forked children, each with its own tickets. A row for each, and one for both
    over their common span (the later first answer to the earlier last one)."""
    config = SimulatorConfig(**spec["sim"])
    count, ceiling = spec["tickets"], spec["ceiling"]
    with SimulatorProcess(config) as sim:
        start_at = time.time() + 1.0  # both forked and their tickets loaded by then
        forked = [
            start_forked(name, sim.base_url, count, max_attempts=spec.get("max_attempts", 50),
                         first_lap=lap, start_at=start_at)
            for lap in (0, 1)
        ]  # fmt: skip
        runs = [collect_forked(f) for f in forked]
        stats = sim.stats()
    times = [sorted(run["done_at"]) for run in runs]
    begin = max((t[0] for t in times if t), default=0.0)
    end = min((t[-1] for t in times if t), default=0.0)
    span = end - begin
    inside = [sum(1 for x in t if begin <= x <= end) for t in times]
    rows = []
    for i, run in enumerate(runs):
        own = inside[i] / span if span > 0 else None
        rows.append({
            "scenario": scenario, "contestant": f"{name} #{i + 1}", "items": run["items"],
            "items_per_s": round(run["ok"] / run["wall_s"], 2),
            "steady_per_s": round(run["steady_per_s"], 2) if run["steady_per_s"] else None,
            "ceiling_per_s": ceiling / 2,  # its fair share
            "pct_of_ceiling": round(100 * own / (ceiling / 2), 1) if own else None,
            "lost": run["items"] - run["ok"], "peak_rss_mib": round(run["peak_rss_mib"], 1),
            "settled_concurrency": run.get("settled_concurrency"),
            "wall_s": round(run["wall_s"], 1), "span_per_s": round(own, 2) if own else None,
        })  # fmt: skip
    requests = stats["requests_total"]
    together = sum(inside) / span if span > 0 else None
    ok = sum(run["ok"] for run in runs)
    wall = max(run["wall_s"] for run in runs)
    row = {
        "scenario": scenario, "contestant": "together", "items": 2 * count,
        "items_per_s": round(ok / wall, 2), "ceiling_per_s": ceiling,
        "pct_of_ceiling": round(100 * together / ceiling, 1) if together else None,
        "share_429": round(stats["by_status"].get("429", 0) / requests, 4) if requests else 0,
        "attempts_per_item": round(requests / (2 * count), 3), "lost": 2 * count - ok,
        "max_in_flight": stats["max_in_flight"], "wall_s": round(wall, 1),
        "overlap_s": round(span, 1), "span_per_s": round(together, 2) if together else None,
    }  # fmt: skip
    rows.append(row)
    return rows


def check(row: dict[str, Any], targets: dict[str, tuple[str, Any]]) -> str:
    """`targets` ({column: (op, value)}) as one cell: each with ok, MISS or n/a."""
    ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b}
    parts = []
    for column, (op, want) in targets.items():
        got = row.get(column)
        verdict = "n/a" if got is None else "ok" if ops[op](got, want) else "MISS"
        parts.append(f"{column}{op}{want:g} {verdict}" if not isinstance(want, bool)
                     else f"{column} {verdict}")  # fmt: skip
    return "; ".join(parts)


def p2_targets(rows: list[dict[str, Any]]) -> None:
    """The CLI against the plain pattern in the same run, by `server_per_s`: at least 1.2x
    plain-50's and 1.0x the best plain-N's."""
    cli = next((r for r in rows if r["contestant"] == CLI), None)
    plain = [r for r in rows if r["contestant"].startswith("plain-")]
    if cli is None or not plain:
        return

    fifty = next((r for r in plain if r["contestant"] == "plain-50"), None)
    best = max(plain, key=lambda r: r["server_per_s"] or 0)
    verdicts = []
    for other, want in ((fifty, 1.2), (best, 1.0)):
        if other is None:
            verdicts.append(f"no plain-50 (>={want:g})")
            continue
        mine, theirs = cli["server_per_s"], other["server_per_s"]
        if mine is None or not theirs:
            verdicts.append(f"vs {other['contestant']} n/a (>={want:g})")
            continue
        times = mine / theirs
        verdict = "ok" if times >= want else "MISS"
        verdicts.append(f"{times:.2f}x {other['contestant']} >={want:g} {verdict}")
    cli["target"] = "; ".join(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", help="scenarios to run, e.g. P1 P2")
    parser.add_argument("--contestants", nargs="*", help="override, e.g. aibatch-30 plain-50")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    chosen = {k: v for k, v in scenarios(args.quick).items() if not args.only or k in args.only}
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aibatch-bench-")))
        server = None
        if any(needs_server(spec, args.contestants) for spec in chosen.values()):
            # It starts (20-40 s) while the scenarios that need no server run.
            server = PrefectServerProcess(work / "prefect-home").launch()
            stack.callback(server.stop)
        for scenario, spec in chosen.items():
            if needs_server(spec, args.contestants) and server is not None:
                server.wait_ready()
            rows.extend(run_scenario(scenario, spec, args.contestants, server, work))
    write_table(rows, args.quick)


def needs_server(spec: dict[str, Any], contestants: list[str] | None) -> bool:
    """The flow scenarios and every `aibatch run` (the CLI ones, P2's CLI contestant) run on
    the benchmark's Prefect server."""
    names = contestants or spec.get("contestants", [])
    return "flow" in spec or "cli" in spec or CLI in names


def run_scenario(
    scenario: str,
    spec: dict[str, Any],
    contestants: list[str] | None,
    server: PrefectServerProcess | None,
    work: Path,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "flow" in spec:
        assert server is not None
        frame = pd.DataFrame(load_text_rows(spec["tickets"]), columns=["id", "text"])
        if spec["flow"] == "scale":
            rows = flow_scenarios.scale(
                server, frame, work, spec["chunk_size"], spec.get("bucket", False)
            )
        else:
            rows = flow_scenarios.shared_limit(
                server, frame, work, spec["cap_rpm"], spec["chunk_size"]
            )
        for row in rows:
            print(json.dumps(row), file=sys.stderr, flush=True)
        return rows
    if "cli" in spec:  # O45, OP: one `aibatch run` through an outage
        assert server is not None
        config = SimulatorConfig(**spec["sim"])
        frame = pd.DataFrame(load_text_rows(spec["tickets"]), columns=["id", "text"])
        row = flow_scenarios.cli_fault(
            scenario, server, config, frame, work, spec["timeout_s"], spec.get("args")
        )
        targets = OP_TARGETS if scenario == "OP" else o45_targets(spec["tickets"])
        row["target"] = check(row, targets)
        print(json.dumps(row), file=sys.stderr, flush=True)
        return [row]
    names = contestants or spec["contestants"]
    if spec.get("pair"):  # K2, K2h: two runs on one key
        for name in names:
            pair = measure_pair(scenario, spec, name)
            pair[-1]["target"] = check(pair[-1], TOGETHER_TARGETS)
            for row in pair:
                print(json.dumps(row), file=sys.stderr, flush=True)
            rows.extend(pair)
        return rows
    # A short run on a shared machine varies by ±10% from one run to the next: a scenario
    # with repeats runs its contestants in turn that many times and keeps each one's median.
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(spec.get("repeats", 1)):
        for name in names:
            row = measure(scenario, spec, name, server, work)
            if scenario == "TK":
                row["target"] = check(row, TK_TARGETS)
            print(json.dumps(row), file=sys.stderr, flush=True)
            runs[name].append(row)
    for name in names:
        # The CLI's items/s is mostly its start-up: its median by the server's count.
        key = "server_per_s" if name == CLI else "items_per_s"
        ranked = sorted(runs[name], key=lambda r: r.get(key) or 0)
        row = ranked[len(ranked) // 2]
        if len(ranked) > 1:
            row["runs_items_per_s"] = [r["items_per_s"] for r in runs[name]]
        rows.append(row)
    if scenario == "P2":
        p2_targets(rows)
    if scenario == "P3" and rows:
        bare = next(r for r in rows if r["contestant"].startswith("bare"))
        for r in rows:
            r["ceiling_per_s"] = bare["items_per_s"]
            r["pct_of_ceiling"] = round(100 * r["items_per_s"] / bare["items_per_s"], 1)
    return rows


def write_table(rows: list[dict[str, Any]], quick: bool) -> None:
    table = pd.DataFrame(rows)
    last = [c for c in ("target",) if c in table.columns]  # the long cells, at the end
    table = table[[c for c in table.columns if c not in last] + last]
    print(table.to_string(index=False))
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if quick else ""
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "platform": platform.platform(), "quick": quick}  # fmt: skip
    (RESULTS / f"throughput{suffix}.json").write_text(
        json.dumps({"machine": machine, "rows": rows}, indent=2)
    )
    with (RESULTS / f"throughput{suffix}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table.columns))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
