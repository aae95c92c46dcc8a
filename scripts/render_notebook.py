"""Execute notebooks/reading-results.ipynb against an output directory; save the figures.

    python scripts/render_notebook.py --output data/output --figures docs/figures

With --rehearse it first makes that output: the sample tickets summarised and classified
through a rate-limited, faulty simulator (429 storm, 529s, 500s, dropped connections), so
every plot has something to show. That is how the README's figures were made.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "reading-results.ipynb"


def execute(output: Path, input_path: Path, figures: Path, executed: Path | None) -> None:
    """Run every cell (in a fresh kernel, from notebooks/); raises on the first error."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    os.environ.update({
        "AIBATCH_OUTPUT": str(output.resolve()),
        "AIBATCH_INPUT": str(input_path.resolve()),
        "AIBATCH_FIGURES": str(figures.resolve()),
    })  # fmt: skip
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )  # fmt: skip
    client.execute()
    if executed is not None:
        executed.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, executed)


def rehearse(output: Path, input_path: Path) -> None:
    """Summarise and classify `input_path` into `output` on a faulty simulator."""
    from aibatch.app.local import run_locally
    from aibatch.errors import EXIT_OK
    from aibatch.flows.process_rows import process_rows
    from aibatch.runs.parameters import RunParameters
    from aibatch.simulator import SimulatorConfig
    from aibatch.simulator.config import StormWindow
    from aibatch.simulator.process import SimulatorProcess

    config = SimulatorConfig(
        rpm=9_000, burst_seconds=2, latency_ms=250, latency_sigma=0.4, p529=0.02, p500=0.01,
        p_drop=0.005, storms=[StormWindow(start_s=75, duration_s=4)], seed=8,
    )  # fmt: skip
    with SimulatorProcess(config) as sim:
        os.environ["ANTHROPIC_API_KEY"] = "rehearsal"  # the simulator takes any key
        os.environ["ANTHROPIC_BASE_URL"] = sim.base_url
        for job in ("summarize", "classify"):
            params = RunParameters(input_path=str(input_path), output_dir=str(output), job=job)
            if run_locally(params, process_rows) != EXIT_OK:
                raise SystemExit(f"the {job} rehearsal run failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "data" / "output")
    parser.add_argument("--input", type=Path, default=ROOT / "data" / "tickets.csv")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--executed", type=Path, help="also save the executed notebook here")
    parser.add_argument("--rehearse", action="store_true", help="make the output first")
    args = parser.parse_args()
    if args.rehearse:
        rehearse(args.output, args.input)
    execute(args.output, args.input, args.figures, args.executed)
    print(f"figures in {args.figures}")


if __name__ == "__main__":
    main()
