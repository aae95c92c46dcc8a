"""The application layer: the command line, the local runner, progress and the run's parameters."""
