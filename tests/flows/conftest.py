"""A real Prefect server (Prefect's test harness) shared by the flow tests of a session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """Start one Prefect server for the session and return its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # The server takes 20-40 s to start on a 2-core machine; Prefect's default is 30.
    with prefect_test_harness(server_startup_timeout=240):
        url = PREFECT_API_URL.value()
        assert url, "the Prefect test harness did not set an API URL"
        yield url
