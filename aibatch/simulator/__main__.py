"""`python -m aibatch.simulator --config-json '{...}'`: the simulator with lean imports.

`SimulatorProcess` starts this rather than `aibatch simulate-api`: the CLI module imports
the anthropic SDK (about 5 s here), the simulator alone about 0.7 s.
"""

from __future__ import annotations

import argparse

from aibatch.simulator.config import SimulatorConfig
from aibatch.simulator.server import serve_forever


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m aibatch.simulator")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config-json", default="{}", help="a whole SimulatorConfig as JSON")
    parser.add_argument(
        "--until-stdin-closes", action="store_true", help="exit when the parent's pipe closes"
    )
    args = parser.parse_args()
    config = SimulatorConfig.model_validate_json(args.config_json)
    serve_forever(
        config, args.port, lambda url: print(f"listening on {url}", flush=True),
        until_stdin_closes=args.until_stdin_closes,
    )  # fmt: skip


if __name__ == "__main__":
    main()
