"""A file or folder, on this machine's disk or in a bucket, with the few operations aibatch
needs from both, each with the guarantee it has on that medium.

Whole-file writes are atomic on both: on a disk, a temporary file beside the target is
fsynced and renamed over it (and the folder fsynced); in a bucket a PUT is atomic per
object (a multipart upload too, once completed), so readers see the whole new object or
the old one, and a writer killed half-way leaves nothing visible. What an object store
lacks (a rename, an append, a lock the kernel frees when a process dies) is built from
that elsewhere: the journal as a sequence of objects, the lock as a lease.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from aibatch.storage.bucket import BucketError, clients

# Schemes an object store could be named by; only S3 is supported (the lock needs its
# conditional writes), the others are refused with a message instead of read as a folder.
SCHEMES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "abfss://")


def is_url(text: str | Path) -> bool:
    return isinstance(text, str) and text.lower().startswith(SCHEMES)


@dataclass(frozen=True)
class Location:
    """`url` as the user sees it (a path as given, or s3://bucket/key); `fs` and `path` as
    pyarrow names it; `bucket` the bucket's name, None on this machine's disk."""

    url: str
    fs: pafs.FileSystem
    path: str
    bucket: str | None = None

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:
        """On this machine's disk a location is a path (pandas, open() take it as one)."""
        if self.bucket is not None:
            raise TypeError(f"{self.url} is in a bucket, not a path on this machine")
        return self.path

    @property
    def is_local(self) -> bool:
        return self.bucket is None

    @property
    def local(self) -> Path:
        """The path on this machine's disk (only for a local location)."""
        assert self.bucket is None, f"{self.url} is not on this machine's disk"
        return Path(self.path)

    @property
    def absolute(self) -> str:
        """What names it from any working directory: an absolute path, or the URL."""
        return self.path if self.bucket is None else self.url

    @property
    def key(self) -> str:
        """The object key (only for a location in a bucket)."""
        assert self.bucket is not None
        return self.path[len(self.bucket) + 1 :]

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix

    def __truediv__(self, name: str) -> Location:
        if self.bucket is None:
            return Location(str(Path(self.url) / name), self.fs, str(Path(self.path) / name))
        return Location(f"{self.url.rstrip('/')}/{name}", self.fs, f"{self.path}/{name}",
                        self.bucket)  # fmt: skip

    # -- reading ----------------------------------------------------------------------------

    def exists(self) -> bool:
        """A file, or a folder (in a bucket: a prefix some object has)."""
        info: pafs.FileInfo = self.fs.get_file_info(self.path)
        return bool(info.type != pafs.FileType.NotFound)

    def is_file(self) -> bool:
        info: pafs.FileInfo = self.fs.get_file_info(self.path)
        return bool(info.type == pafs.FileType.File)

    def files(self, suffix: str = "", recursive: bool = True) -> list[Location]:
        """Files under this folder (sorted; none if it does not exist) ending in `suffix`;
        names starting with '.' or '_' (temporary, hidden) are left out, as pyarrow's
        dataset discovery leaves them."""
        selector = pafs.FileSelector(self.path, recursive=recursive, allow_not_found=True)
        found = []
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File or not info.path.endswith(suffix):
                continue
            if info.base_name.startswith((".", "_")):
                continue
            found.append(self / info.path[len(self.path) :].lstrip("/"))
        return sorted(found, key=lambda location: location.path)

    def subfolders(self) -> list[Location]:
        """The folders right under this one (a bucket's common prefixes), sorted."""
        selector = pafs.FileSelector(self.path, recursive=False, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        names = [i.base_name for i in infos if i.type == pafs.FileType.Directory]
        return [self / name for name in sorted(names)]

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as stream:
            return bytes(stream.read())

    def open_input(self) -> IO[bytes]:
        """A seekable file to read (Parquet footers are read from the end)."""
        return self.fs.open_input_file(self.path)  # type: ignore[no-any-return]

    # -- writing ----------------------------------------------------------------------------

    def write_bytes(self, data: bytes) -> None:
        """Replace the file with `data` atomically (see the module's docstring)."""
        if self.bucket is not None:
            with self.fs.open_output_stream(self.path) as stream:
                stream.write(data)
            return
        target = self.local
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        fsync_dir(target.parent)

    def write_parquet(self, table: pa.Table) -> None:
        """Replace the file with `table` as Parquet, atomically (as `write_bytes`)."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.write_bytes(sink.getvalue().to_pybytes())

    def make_dirs(self) -> None:
        """Create the folder (a bucket has no folders: nothing to do)."""
        if self.bucket is None:
            self.local.mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        """Delete the file; one already gone is fine."""
        if self.bucket is not None:
            # Not pyarrow's delete_file: it leaves an empty "folder" object in its place.
            clients()[0].remove(self.bucket, self.key)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path)

    def remove_tree(self) -> None:
        """Delete the folder and everything under it; one already gone is fine."""
        if self.bucket is None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for found in self.files():
            found.remove()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def location(text: str | Path) -> Location:
    """The location a user named: a path on this machine, or s3://bucket/prefix."""
    if not is_url(text):
        local = Path(text)
        return Location(str(local), pafs.LocalFileSystem(), str(local.absolute()))
    url = str(text)
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "s3":
        raise BucketError(
            f"{url}: only s3:// object stores are supported (an S3-compatible endpoint such "
            "as MinIO or R2 works through AWS_ENDPOINT_URL)"
        )
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise BucketError(f"{url}: name a bucket, as s3://BUCKET/PREFIX")
    key = key.strip("/")
    _, filesystem = clients()
    return Location(
        f"s3://{bucket}/{key}" if key else f"s3://{bucket}",
        filesystem,
        f"{bucket}/{key}" if key else bucket,
        bucket,
    )
