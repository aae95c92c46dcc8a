"""Prefect flows: orchestration only (load, chunk, fan out, wait, report)."""
