"""A local, faithful stand-in for the Anthropic Messages API (see README, "The simulator")."""

from aibatch.simulator.config import OutageWindow, SimulatorConfig, StormWindow
from aibatch.simulator.server import SimulatorServer

__all__ = ["OutageWindow", "SimulatorConfig", "SimulatorServer", "StormWindow"]
