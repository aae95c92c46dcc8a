"""What a run shows in the Prefect UI: a progress artifact and a summary table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)

from aibatch.engine.batches import Submission


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    cleaned = "".join(c if c.isascii() and c.isalnum() else "-" for c in text.lower())
    return "-".join(part for part in cleaned.split("-") if part)[:100]


async def start_progress(key: str, description: str) -> UUID:
    artifact_id: UUID = await acreate_progress_artifact(0.0, key=key, description=description)
    return artifact_id


async def update_progress(artifact_id: UUID, done: int, total: int) -> None:
    percent = 100.0 if total == 0 else min(100.0, 100.0 * done / total)
    await aupdate_progress_artifact(artifact_id, percent)


async def publish_summary(key: str, summary: dict[str, Any], description: str) -> None:
    rows = [{"metric": name, "value": value} for name, value in summary.items()]
    await acreate_table_artifact(rows, key=key, description=description)


async def publish_batches(key: str, submissions: Sequence[Submission], description: str) -> None:
    """Every Message Batch of the output directory, so the UI shows what was submitted."""
    rows = [
        {
            "batch_id": s.batch_id,
            "state": s.state,
            "round": s.round,
            "requests": len(s.custom_ids),
            "model": s.model,
            "recorded_at": s.recorded_at,
            "cancel_requested": s.cancel_requested,
            "note": s.note,
        }
        for s in submissions
    ]
    if rows:
        await acreate_table_artifact(rows, key=key, description=description)


async def publish_scores(key: str, models: Sequence[dict[str, Any]], description: str) -> None:
    """An evaluation's scores, one row per candidate (the `--json` report's `models`)."""
    rows = [
        {name: m[name] for name in ("model", "n", "answered", "accuracy", "cost_usd",
                                    "cost_per_correct_usd", "meets_target", "escalated")}
        for m in models
    ]  # fmt: skip
    await acreate_table_artifact(rows, key=key, description=description)


def emit_operator_events(
    events: Sequence[tuple[str, dict[str, Any]]], job: str, output_dir: str
) -> None:
    """Send a run's operator events to Prefect (automations match `aibatch.run.*`), about
    the job, and related to this flow run."""
    from prefect.events import emit_event
    from prefect.runtime import flow_run

    related = [{"prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                "prefect.resource.role": "flow-run"}] if flow_run.id else []  # fmt: skip
    for name, payload in events:
        emit_event(
            event=name,
            resource={"prefect.resource.id": f"aibatch.job.{job}",
                      "prefect.resource.name": job, "aibatch.output": output_dir},
            related=related, payload=payload,
        )  # fmt: skip
