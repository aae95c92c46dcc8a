"""A local, faithful stand-in for the Anthropic Messages API (see README, "The simulator")."""

from aibatch.simulator.config import SimulatorConfig, StormWindow
from aibatch.simulator.server import SimulatorServer

__all__ = ["SimulatorConfig", "SimulatorServer", "StormWindow"]
