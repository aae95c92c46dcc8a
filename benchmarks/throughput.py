"""Throughput benchmark: aibatch against the patterns it replaces, on the same simulator.

    python benchmarks/throughput.py            # full run (tens of minutes)
    python benchmarks/throughput.py --quick    # smaller scenarios, under 2 minutes

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
  P2  latency-bound: no limit, lognormal latency with median 200 ms.
  P3  overhead: zero latency; aibatch against a bare SDK loop.
  P5  token-bound: input and output tokens per minute are the binding limits.
  P7  the limit halves mid-run (another client starts on the key), no headers.
  P8  the limit doubles mid-run, without headers (P8) and with them (P8h).
  S   a 30 s 429 storm mid-run: how many attempts each ticket makes during it.
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

from aibatch.engine.backend import AnthropicBackend
from aibatch.engine.processor import ChunkIncomplete, Committer, RunStats, TicketProcessor
from aibatch.jobs.spec import JobSpec
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
                "contestants": ["aibatch-auto"],
            },
            "P3": {
                "sim": {},
                "tickets": 1_000,
                "ceiling": None,
                "contestants": ["bare-sdk-32", "aibatch-auto"],
            },
            "P4": {"flow": "scale", "tickets": 500, "chunk_size": 250},
            "P6": {"flow": "shared", "tickets": 400, "cap_rpm": 2_400, "chunk_size": 50},
        }
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
                               "aibatch-auto"]},
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
        "P6": {"flow": "shared", "tickets": 3_000, "cap_rpm": 1_200, "chunk_size": 100},
    }  # fmt: skip


def load_tickets(count: int) -> list[tuple[str, str]]:
    frame = pd.read_csv(ROOT / "data" / "tickets.csv", dtype=str)
    rows = list(zip(frame["id"], frame["text"], strict=True))
    out = []
    for i in range(count):  # beyond the sample: same texts, distinct ids and prompts
        ticket_id, text = rows[i % len(rows)]
        lap = i // len(rows)
        out.append((f"{ticket_id}-{lap}", f"{text} (#{lap})" if lap else text))
    return out


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
) -> tuple[int, dict[str, Any]]:
    """aibatch's engine as the flow runs it: pacer, controller, journal and commits."""
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(tmp, SPEC.job)
        with store.locked():
            carried = pd.DataFrame(index=pd.Index([], name="id"))
            committer = Committer.open(store, "bench", carried)
            backend = AnthropicBackend(api_key="bench", base_url=base_url)
            stats = RunStats(total=len(tickets))
            processor = TicketProcessor.with_defaults(
                backend, SPEC, committer, "bench", stats=stats, max_concurrency=concurrency,
                max_attempts=50,
            )  # fmt: skip
            chunk = 200
            limits: list[tuple[float, int]] = []  # (time, concurrency limit) every 50 ms

            async def sample_limit() -> None:
                while True:
                    limits.append((time.time(), processor.admission.concurrency.current))
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample_limit())
            with contextlib.suppress(ChunkIncomplete):  # unfinished ones count as lost
                await asyncio.gather(*(
                    processor.process_chunk(tickets[i : i + chunk])
                    for i in range(0, len(tickets), chunk)
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


def run_contestant(name: str, base_url: str, count: int) -> dict[str, Any]:
    tickets = load_tickets(count)
    kind, _, size = name.partition("-")
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
        ok, extra = asyncio.run(aibatch_engine(base_url, tickets, concurrency, done_at, latencies))
    wall = time.perf_counter() - started
    return {
        "items": len(tickets), "ok": ok, "wall_s": wall, "steady_per_s": steady_rate(done_at),
        "mean_latency_s": sum(latencies) / len(latencies) if latencies else None,
        "done_at": done_at,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra,
    }  # fmt: skip


# -- the driver --------------------------------------------------------------------------------


def _contestant_child(name: str, base_url: str, count: int, conn: Connection) -> None:
    try:
        conn.send(run_contestant(name, base_url, count))
    except BaseException as exc:  # reported by the parent, which raises
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def run_forked(name: str, base_url: str, count: int) -> dict[str, Any]:
    """One contestant in a forked child: its own peak RSS, without re-importing the SDK
    (a fresh interpreter costs ~5 s of imports here, per contestant)."""
    receiver, sender = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_contestant_child, args=(name, base_url, count, sender))
    child.start()
    sender.close()
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


def measure(scenario: str, spec: dict[str, Any], name: str) -> dict[str, Any]:
    config = SimulatorConfig(**spec["sim"])
    with SimulatorProcess(config) as sim:
        started = time.time()
        change = spec.get("change")
        timer = None
        if change is not None:  # the limit moves while the contestant runs
            timer = threading.Timer(change[0], sim.configure, kwargs=change[1])
            timer.start()
        run = run_forked(name, sim.base_url, spec["tickets"])
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
    if ceiling == "tokens":
        minutes = run["wall_s"] / 60
        used = max(stats["input_tokens"] / minutes / spec["sim"]["itpm"],
                   stats["output_tokens"] / minutes / spec["sim"]["otpm"])  # fmt: skip
        row["ceiling_per_s"] = round(rate / used, 2) if used else None
        row["pct_of_ceiling"] = round(100 * used, 1)
    elif ceiling is not None:
        row["ceiling_per_s"] = ceiling
        row["pct_of_ceiling"] = round(100 * rate / ceiling, 1)
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
    return row


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
        if any("flow" in spec for spec in chosen.values()):
            # It starts (20-40 s) while the scenarios that need no server run.
            server = PrefectServerProcess(work / "prefect-home").launch()
            stack.callback(server.stop)
        for scenario, spec in chosen.items():
            if "flow" in spec and server is not None:
                server.wait_ready()
            rows.extend(run_scenario(scenario, spec, args.contestants, server, work))
    write_table(rows, args.quick)


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
        frame = pd.DataFrame(load_tickets(spec["tickets"]), columns=["id", "text"])
        if spec["flow"] == "scale":
            rows = flow_scenarios.scale(server, frame, work, spec["chunk_size"])
        else:
            rows = flow_scenarios.shared_limit(
                server, frame, work, spec["cap_rpm"], spec["chunk_size"]
            )
        for row in rows:
            print(json.dumps(row), file=sys.stderr, flush=True)
        return rows
    names = contestants or spec["contestants"]
    # A short run on a shared machine varies by ±10% from one run to the next: a scenario
    # with repeats runs its contestants in turn that many times and keeps each one's median.
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(spec.get("repeats", 1)):
        for name in names:
            row = measure(scenario, spec, name)
            print(json.dumps(row), file=sys.stderr, flush=True)
            runs[name].append(row)
    for name in names:
        ranked = sorted(runs[name], key=lambda r: r["items_per_s"])
        row = ranked[len(ranked) // 2]
        if len(ranked) > 1:
            row["runs_items_per_s"] = [r["items_per_s"] for r in runs[name]]
        rows.append(row)
    if scenario == "P3" and rows:
        bare = next(r for r in rows if r["contestant"].startswith("bare"))
        for r in rows:
            r["ceiling_per_s"] = bare["items_per_s"]
            r["pct_of_ceiling"] = round(100 * r["items_per_s"] / bare["items_per_s"], 1)
    return rows


def write_table(rows: list[dict[str, Any]], quick: bool) -> None:
    table = pd.DataFrame(rows)
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
