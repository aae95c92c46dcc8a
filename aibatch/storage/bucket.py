"""An S3 bucket's clients, configured as every AWS tool is: from the standard environment.

Two clients, each for what it does well: pyarrow's `S3FileSystem` reads and writes the
Parquet datasets (multipart uploads, ranged reads, the dataset scanner); boto3 does the
few conditional writes the lock needs (`If-None-Match: *` to create, `If-Match: ETAG` to
renew or release), which pyarrow's filesystem does not offer. boto3 resolves the endpoint
(`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, a profile's `endpoint_url`), the region and the
credentials (`AWS_ACCESS_KEY_ID`..., `AWS_PROFILE`, SSO, instance roles); pyarrow is handed
the same endpoint and region, and the same credentials when they come from the
environment or a profile (its own chain covers roles).
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pyarrow.fs as pafs

# The environment variables a client is configured from: a new value (a test's server,
# another profile) means new clients.
_ENVIRONMENT = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_CONFIG_FILE",
)  # fmt: skip


class BucketError(OSError):
    """The object store refused or could not be reached; says what to check."""


@dataclass(frozen=True)
class StoredObject:
    """An object as read, with the server's clock at the moment it answered: a lease is
    judged by the store's clock, never by this machine's (clocks of workers differ)."""

    data: bytes
    etag: str
    modified: datetime
    server_now: datetime


def _error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class Bucket:
    """Conditional writes to one store, through boto3 (thread-safe: one client shared)."""

    def __init__(self) -> None:
        import boto3  # only runs with a bucket pay for importing it
        from botocore.config import Config

        session = boto3.session.Session()
        self.client: Any = session.client(
            "s3", config=Config(connect_timeout=10, read_timeout=60, retries={"mode": "standard"})
        )
        self.endpoint_url: str = self.client.meta.endpoint_url
        self.region: str = self.client.meta.region_name or "us-east-1"
        credentials = session.get_credentials()
        self._frozen = credentials.get_frozen_credentials() if credentials else None
        self._method = credentials.method if credentials else None

    def arrow_filesystem(self) -> pafs.S3FileSystem:
        """pyarrow's filesystem for the same endpoint, region and (from the environment or a
        profile) credentials."""
        options: dict[str, Any] = {"region": self.region}
        if not self.endpoint_url.split("://", 1)[-1].split("/")[0].endswith("amazonaws.com"):
            options["endpoint_override"] = self.endpoint_url
        if self._frozen is not None and self._method in ("env", "shared-credentials-file",
                                                          "config-file", "explicit"):  # fmt: skip
            options.update(
                access_key=self._frozen.access_key,
                secret_key=self._frozen.secret_key,
                session_token=self._frozen.token,
            )
        return pafs.S3FileSystem(**options)

    def _call(self, what: str, bucket: str, key: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, what)(Bucket=bucket, Key=key, **kwargs)
        except ClientError as error:
            if _error_code(error) in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise _Precondition from error
            if _error_code(error) in ("NoSuchKey", "404"):
                raise _Missing from error
            raise BucketError(f"s3://{bucket}/{key}: {error}") from error
        except BotoCoreError as error:
            raise BucketError(f"s3://{bucket}/{key}: {error}") from error

    def create(self, bucket: str, key: str, data: bytes) -> str | None:
        """Write the object only if there is none: its ETag, or None when one exists."""
        try:
            return str(self._call("put_object", bucket, key, Body=data, IfNoneMatch="*")["ETag"])
        except _Precondition:
            return None

    def replace(self, bucket: str, key: str, data: bytes, etag: str) -> str | None:
        """Overwrite the object only if it is still the version `etag`: the new ETag, or
        None when another writer changed it (or it is gone)."""
        try:
            return str(self._call("put_object", bucket, key, Body=data, IfMatch=etag)["ETag"])
        except (_Precondition, _Missing):
            return None

    def read(self, bucket: str, key: str) -> StoredObject | None:
        try:
            answer = self._call("get_object", bucket, key)
        except _Missing:
            return None
        date = answer["ResponseMetadata"]["HTTPHeaders"].get("date")
        return StoredObject(
            data=answer["Body"].read(),
            etag=str(answer["ETag"]),
            modified=answer["LastModified"],
            server_now=parsedate_to_datetime(date) if date else answer["LastModified"],
        )

    def delete(self, bucket: str, key: str, etag: str) -> None:
        """Delete the object if it is still the version `etag` (never another's)."""
        with contextlib.suppress(_Precondition, _Missing):
            self._call("delete_object", bucket, key, IfMatch=etag)

    def remove(self, bucket: str, key: str) -> None:
        """Delete the object (S3 answers a key already gone as deleted)."""
        with contextlib.suppress(_Missing):
            self._call("delete_object", bucket, key)

    def check(self, bucket: str) -> None:
        """BucketError saying what to fix when the bucket cannot be used."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            self.client.head_bucket(Bucket=bucket)
        except NoCredentialsError as error:
            raise BucketError(
                f"s3://{bucket}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            ) from error
        except ClientError as error:
            code = _error_code(error)
            why = {
                "404": "no such bucket",
                "NoSuchBucket": "no such bucket",
                "403": "access denied: check the credentials and the bucket's policy",
            }
            raise BucketError(
                f"s3://{bucket}: {why.get(code, str(error))} (endpoint {self.endpoint_url})"
            ) from error
        except BotoCoreError as error:
            raise BucketError(
                f"s3://{bucket}: cannot reach {self.endpoint_url} ({error}); check "
                "AWS_ENDPOINT_URL and the network"
            ) from error


class _Precondition(Exception):
    pass


class _Missing(Exception):
    pass


_cache: dict[tuple[str | None, ...], tuple[Bucket, pafs.S3FileSystem]] = {}
_cache_lock = threading.Lock()


def clients() -> tuple[Bucket, pafs.S3FileSystem]:
    """This process's clients for the environment as it is now (made once per setting)."""
    setting = tuple(os.environ.get(name) for name in _ENVIRONMENT)
    with _cache_lock:
        if setting not in _cache:
            bucket = Bucket()
            _cache[setting] = (bucket, bucket.arrow_filesystem())
        return _cache[setting]
