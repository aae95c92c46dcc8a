"""Helpers for tests and benchmarks: a Prefect server of our own."""
