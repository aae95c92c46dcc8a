"""Who turns a SIGTERM into a stop while the chunks run."""

from __future__ import annotations

from contextvars import ContextVar

# Set by the local runner (`aibatch run`): the flow's event loop takes SIGTERM while its
# task runs go. Left unset under a Prefect worker, whose cancellation protocol needs
# Prefect's own SIGTERM handler in place (it checks; a cancelled run would end Crashed).
SIGTERM_IN_EVENT_LOOP: ContextVar[bool] = ContextVar("sigterm_in_event_loop", default=False)
