"""An S3 server (moto's, from PyPI) on 127.0.0.1 in a child process, for the tests and the
benchmark that put aibatch's input and output in a bucket.

moto's server speaks S3's HTTP API, conditional writes included (`If-None-Match: *`,
`If-Match`), so aibatch talks to it exactly as to S3 or MinIO: through `AWS_ENDPOINT_URL`
and the credentials in `env`. Stopped, and waited for, on exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from aibatch.children import StartedInWith, stop_child
from aibatch.testing.prefect_server import free_port


class S3ServerProcess(StartedInWith):
    """moto's S3 server on a free loopback port; `env` is what a client process needs."""

    def __init__(self, log: Path | None = None, start_timeout_s: float = 60) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS settings every AWS tool reads, pointed at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "aibatch-test",
            "AWS_SECRET_ACCESS_KEY": "aibatch-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> S3ServerProcess:
        sink = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )  # fmt: skip
        finally:
            if self.log_path and not isinstance(sink, int):
                sink.close()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the S3 server exited ({self._process.returncode})")
            try:
                with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=2):
                    return self
            except urllib.error.HTTPError:
                return self  # it answered
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() >= deadline:
                self.stop()
                raise TimeoutError(f"S3 server not up after {self.start_timeout_s} s")
            time.sleep(0.1)

    def new_bucket(self, prefix: str = "aibatch") -> str:
        """A bucket of its own (each test's, so tests never see each other's objects)."""
        import boto3

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip
        client.create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_child(process, grace_s=10)
