"""Throughput benchmark: aibatch against the patterns it replaces, on the same simulator.

    python benchmarks/throughput.py            # full run (tens of minutes)
    python benchmarks/throughput.py --quick    # smaller scenarios, under 2 minutes

Every contestant runs in its own process (so peak RSS is its own) against a fresh
simulator process with the scenario's settings. Printed as one table and written to
benchmarks/results/throughput.{csv,json}. Figures are ratios measured in one run: items/s
against the scenario's ceiling, the share of HTTP requests answered 429, HTTP attempts
per item, items lost.

Scenarios (see issue text in the README's "Throughput" section):
  P1  rate-bound: 600 RPM enforced over 2 s windows, 200 ms latency; no limits given.
  P1b the same with the server sending no rate-limit headers.
  P2  latency-bound: no limit, lognormal latency with median 200 ms.
  P3  overhead: zero latency; aibatch against a bare SDK loop.
  P5  token-bound: input and output tokens per minute are the binding limits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anthropic
import pandas as pd

from aibatch.backend import AnthropicBackend
from aibatch.engine import ChunkIncomplete, Committer, RunStats, TicketProcessor
from aibatch.jobs import JobSpec
from aibatch.pacer import Pacer
from aibatch.simulator import SimulatorConfig
from aibatch.simulator.process import SimulatorProcess
from aibatch.store import ResultStore, carried_schema

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SPEC = JobSpec.build("classify", "claude-haiku-4-5", None)


def scenarios(quick: bool) -> dict[str, dict[str, Any]]:
    n = 300 if quick else 1_000
    return {
        "P1": {"sim": {"rpm": 600, "burst_seconds": 2, "latency_ms": 200}, "tickets": n,
               "ceiling": 10.0,
               "contestants": ["sequential", "plain-20", "plain-50", "aibatch-20", "aibatch-auto"]},
        "P1b": {"sim": {"rpm": 600, "burst_seconds": 2, "latency_ms": 200,
                        "send_ratelimit_headers": False}, "tickets": n, "ceiling": 10.0,
                "contestants": ["plain-20", "plain-50", "aibatch-auto"]},
        "P2": {"sim": {"latency_ms": 200, "latency_sigma": 0.3}, "tickets": n,
               "ceiling": None, "contestants": ["plain-50", "aibatch-50", "aibatch-auto"]},
        "P3": {"sim": {}, "tickets": 2_000 if quick else 10_000, "ceiling": None,
               "contestants": ["bare-sdk-32", "aibatch-32", "aibatch-auto"]},
        "P5": {"sim": {"itpm": 90_000, "otpm": 9_000, "burst_seconds": 2, "latency_ms": 100},
               "tickets": n, "ceiling": "tokens",
               "contestants": ["plain-20", "aibatch-auto"]},
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
    sdk_retries: int = 2,
    own_attempts: int = 3,
) -> int:
    """The pattern aibatch replaces: one semaphore, a retry loop, gather; failures → None."""
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="bench", max_retries=sdk_retries)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(text: str) -> Any:
        async with semaphore:
            for attempt in range(own_attempts):
                try:
                    return await client.messages.create(**SPEC.request(text))
                except anthropic.APIStatusError:
                    await asyncio.sleep(2**attempt)
                except anthropic.APIConnectionError:
                    await asyncio.sleep(2**attempt)
            return None

    answers = await asyncio.gather(*(one(t) for _, t in tickets))
    await client.close()
    return sum(a is not None for a in answers)


async def bare_sdk(base_url: str, tickets: list[tuple[str, str]], concurrency: int) -> int:
    """The floor: the SDK with no retries and nothing around it."""
    return await plain_loop(base_url, tickets, concurrency, sdk_retries=0, own_attempts=1)


async def sequential(base_url: str, tickets: list[tuple[str, str]]) -> int:
    return await plain_loop(base_url, tickets, 1)


async def aibatch_engine(
    base_url: str, tickets: list[tuple[str, str]], concurrency: int | None
) -> tuple[int, dict[str, Any]]:
    """aibatch's engine as the flow runs it: pacer, controller, journal and commits."""
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(tmp)
        with store.locked():
            carried = pd.DataFrame(index=pd.Index([], name="id"))
            committer = Committer(store, "bench", carried, carried_schema(carried), set())
            backend = AnthropicBackend(api_key="bench", base_url=base_url)
            stats = RunStats(total=len(tickets))
            processor = TicketProcessor(
                backend, SPEC, committer, "bench", max_concurrency=concurrency,
                max_attempts=50, stats=stats, pacer=Pacer(),
            )  # fmt: skip
            chunk = 200
            with contextlib.suppress(ChunkIncomplete):  # unfinished ones count as lost
                await asyncio.gather(*(
                    processor.process_chunk(tickets[i : i + chunk])
                    for i in range(0, len(tickets), chunk)
                ))  # fmt: skip
            await committer.commit()
            committer.close()
            await backend.aclose()
            extra = {"settled_concurrency": processor.concurrency.current,
                     "learned_rpm": processor.pacer.requests.limit_per_min
                     if processor.pacer.requests else None}  # fmt: skip
            return stats.ok, extra


def run_contestant(name: str, base_url: str, count: int) -> dict[str, Any]:
    tickets = load_tickets(count)
    kind, _, size = name.partition("-")
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if kind == "sequential":
        tickets = tickets[: max(20, count // 10)]  # its rate, on a tenth of the items
        ok = asyncio.run(sequential(base_url, tickets))
    elif kind == "plain":
        ok = asyncio.run(plain_loop(base_url, tickets, int(size)))
    elif kind == "bare":
        ok = asyncio.run(bare_sdk(base_url, tickets, int(size.removeprefix("sdk-"))))
    else:
        concurrency = None if size == "auto" else int(size)
        ok, extra = asyncio.run(aibatch_engine(base_url, tickets, concurrency))
    wall = time.perf_counter() - started
    return {
        "items": len(tickets), "ok": ok, "wall_s": wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra,
    }  # fmt: skip


# -- the driver --------------------------------------------------------------------------------


def measure(scenario: str, spec: dict[str, Any], name: str) -> dict[str, Any]:
    config = SimulatorConfig(**spec["sim"])
    with SimulatorProcess(config) as sim:
        result = subprocess.run(
            [sys.executable, __file__, "--contestant", name, "--base-url", sim.base_url,
             "--count", str(spec["tickets"])],
            capture_output=True, text=True, timeout=3_600,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{scenario}/{name} failed:\n{result.stderr[-2000:]}")
        run = json.loads(result.stdout.strip().splitlines()[-1])
        stats = sim.stats()
    requests = stats["requests_total"]
    rate = run["ok"] / run["wall_s"]
    row: dict[str, Any] = {
        "scenario": scenario, "contestant": name, "items": run["items"],
        "items_per_s": round(rate, 2), "ceiling_per_s": None, "pct_of_ceiling": None,
        "share_429": round(stats["by_status"].get("429", 0) / requests, 4) if requests else 0,
        "attempts_per_item": round(requests / run["items"], 3),
        "lost": run["items"] - run["ok"], "peak_rss_mib": round(run["peak_rss_mib"], 1),
        "settled_concurrency": run.get("settled_concurrency"),
        "max_in_flight": stats["max_in_flight"], "wall_s": round(run["wall_s"], 1),
    }  # fmt: skip
    ceiling = spec["ceiling"]
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
        # Little's law: what the concurrency in use could carry at the mean latency.
        sim_cfg = spec["sim"]
        mean_latency_s = sim_cfg["latency_ms"] / 1000 * math.exp(sim_cfg["latency_sigma"] ** 2 / 2)
        used = run.get("settled_concurrency") or int(name.rsplit("-", 1)[1])
        used = min(used, stats["max_in_flight"]) or used
        row["ceiling_per_s"] = round(used / mean_latency_s, 2)
        row["pct_of_ceiling"] = round(100 * rate / row["ceiling_per_s"], 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", help="scenarios to run, e.g. P1 P2")
    parser.add_argument("--contestant", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contestant:
        print(json.dumps(run_contestant(args.contestant, args.base_url, args.count)))
        return

    rows = []
    for scenario, spec in scenarios(args.quick).items():
        if args.only and scenario not in args.only:
            continue
        for name in spec["contestants"]:
            row = measure(scenario, spec, name)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
        p3 = [r for r in rows if r["scenario"] == "P3"]
        if scenario == "P3" and p3:
            bare = next(r for r in p3 if r["contestant"].startswith("bare"))
            for r in p3:
                r["ceiling_per_s"] = bare["items_per_s"]
                r["pct_of_ceiling"] = round(100 * r["items_per_s"] / bare["items_per_s"], 1)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    machine = {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
               "platform": platform.platform(), "quick": args.quick}  # fmt: skip
    (RESULTS / f"throughput{suffix}.json").write_text(
        json.dumps({"machine": machine, "rows": rows}, indent=2)
    )
    with (RESULTS / f"throughput{suffix}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
