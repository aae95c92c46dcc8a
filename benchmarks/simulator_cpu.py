"""CPU the simulator spends per message at zero latency (target: at most 0.2 ms).

Starts `aibatch simulate-api` in its own process, sends N classification and summary
requests as aibatch builds them from this process over keep-alive connections, and divides
the server process's CPU time (user + system, from the OS) by the requests it answered.

    python benchmarks/simulator_cpu.py --requests 20000 --concurrency 32 --rounds 5 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

import aiohttp

from aibatch.jobs.spec import JobSpec
from aibatch.simulator.process import SimulatorProcess

TICKET = (
    "Hello, I was charged twice for my subscription this month and the invoice shows the "
    "wrong VAT number. I tried to update the card in settings but the page crashes with an "
    "error. Could you refund the duplicate charge and fix the settings page? Thanks, Dana."
)


SUMMARY = JobSpec.build("summarize", "claude-sonnet-5-5", None)
LABEL = JobSpec.build("classify", "claude-haiku-5-5", None)


def request_body(i: int) -> dict[str, object]:
    """What aibatch sends: a summary on Sonnet 5.5, a label (structured output) on Haiku 5.5."""
    spec = SUMMARY if i % 2 else LABEL
    return spec.request(f"{TICKET} (ref {i})")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


async def drive(base_url: str, total: int, concurrency: int) -> int:
    bodies = [json.dumps(request_body(i)).encode() for i in range(total)]
    headers = {
        "content-type": "application/json",
        "x-api-key": "bench",
        "anthropic-version": "2023-06-01",
    }
    ok = 0
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal ok, next_index
            while next_index < total:
                body = bodies[next_index]
                next_index += 1
                async with session.post(
                    f"{base_url}/v1/messages", data=body, headers=headers
                ) as response:
                    await response.read()
                    ok += response.status == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="the median round is reported")
    args = parser.parse_args()
    rounds: list[tuple[float, float, int]] = []  # (server CPU ms per request, wall s, ok)
    with SimulatorProcess() as sim:
        asyncio.run(drive(sim.base_url, 500, args.concurrency))  # warm up
        for _ in range(args.rounds):
            before = cpu_seconds(sim.pid)
            started = time.perf_counter()
            ok = asyncio.run(drive(sim.base_url, args.requests, args.concurrency))
            wall = time.perf_counter() - started
            rounds.append(((cpu_seconds(sim.pid) - before) / args.requests * 1000, wall, ok))
        peak_rss_mb = sim.peak_rss_kib() / 1024
    per_request_ms, wall, ok = sorted(rounds)[len(rounds) // 2]
    report = {
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "ok_in_median_round": ok,
        "server_cpu_ms_per_request_median": round(per_request_ms, 4),
        "server_cpu_ms_per_request_rounds": [round(r[0], 4) for r in rounds],
        "budget_ms": 0.2,
        "requests_per_s_median_round": round(args.requests / wall),
        "server_peak_rss_mib": round(peak_rss_mb, 1),
        "client_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
