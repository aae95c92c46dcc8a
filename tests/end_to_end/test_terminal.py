"""`aibatch run` as a person sees it in a terminal (a pseudo-terminal, its screen rebuilt by
a terminal emulator): the log lines above, the bar once at the bottom of what ran, the
summary table at the end; and in a log file, plain progress lines."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pyte

from tests.end_to_end.test_estimate_command import aibatch, clean_env
from tests.helpers import ROOT

COLUMNS, LINES = 140, 200  # tall enough that the whole run stays on one screen


def run_in_a_terminal(args: list[str], env: dict[str, str], timeout_s: float = 240) -> list[str]:
    """The screen after the command ran in a pseudo-terminal of COLUMNS x LINES."""
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    parent, child = pty.openpty()
    os.set_blocking(parent, False)
    env = {**env, "TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(LINES)}
    process = subprocess.Popen(
        [sys.executable, "-m", "aibatch", *args], stdin=child, stdout=child, stderr=child,
        env=env, cwd=ROOT, close_fds=True,
    )  # fmt: skip
    os.close(child)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([parent], [], [], 0.2)
            if ready:
                try:
                    data = os.read(parent, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                stream.feed(data)
            elif process.poll() is not None:
                break
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(parent)
    return [line.rstrip() for line in screen.display]


def test_in_a_terminal_the_bar_shows_once_below_the_logs_then_the_summary_table(
    tmp_path: Path,
) -> None:
    env = clean_env(tmp_path)
    screen = run_in_a_terminal(
        ["run", "data/tickets.csv", "--limit", "400", "--chunk-size", "50",
         "--output", str(tmp_path / "out")], env,
    )  # fmt: skip
    text = "\n".join(screen)
    bars = [i for i, line in enumerate(screen) if "req/s" in line and "429s" in line]
    assert len(bars) == 1, text  # one bar, not one per log line
    logs = [i for i, line in enumerate(screen) if "| INFO" in line]
    assert logs and min(logs) < bars[0], text  # the logs print above the bar
    assert "400/400" in screen[bars[0]]
    chunk_done = [
        line for line in screen if "Finished in state Completed" in line and "chunk" in line
    ]
    assert chunk_done == []  # quiet in a terminal unless --verbose
    table = [i for i, line in enumerate(screen) if line.startswith("│ rows")]
    assert table and table[0] > bars[0], text  # the summary table comes after
    assert "400 ok, 0 failed" in screen[table[0]]
    assert any(line.startswith("│ results") and "summarize/results" in line for line in screen)


def test_without_a_terminal_progress_is_plain_lines(tmp_path: Path) -> None:
    done = aibatch("run", "data/tickets.csv", "--limit", "200", "--output",
                   str(tmp_path / "out"), env=clean_env(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "summarize tickets.csv: 200/200 rows (100%)" in done.stderr
    assert "━" not in done.stderr  # no bar drawn into a log
    assert "│ rows" in done.stderr and "200 ok, 0 failed" in done.stderr
