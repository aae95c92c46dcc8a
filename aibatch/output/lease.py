"""The lock of an output in a bucket: a lease the object store itself arbitrates.

A bucket has no lock a dead process gives back (flock, on a disk, is freed by the kernel).
So the lock is an object: created only if absent (`If-None-Match: *`), renewed every third
of its term by a conditional overwrite of the version this run wrote (`If-Match: ETAG`),
and deleted the same way. Every decision is the store's:

- two runs creating it at once: the store lets exactly one PUT succeed;
- a holder that died stops renewing; once the store's clock (its `Date`, against the
  object's `Last-Modified`) passes the term, a new run takes it over by a conditional
  overwrite of the stale version, which again only one taker wins. A holder on this very
  machine whose process is gone is taken over at once (a re-run after a kill waits for
  nothing);
- a holder that stalled past its term (a paused container) finds its next renewal refused
  (the version changed): it has lost the output, and its committer publishes nothing more.
  Before each publish the holder renews if a third of the term has passed, so what it
  writes after losing the lease is at most one publish begun within the term.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from aibatch.errors import LeaseLost
from aibatch.storage.bucket import BucketError, StoredObject, clients
from aibatch.storage.location import Location

LEASE_S = float(os.environ.get("AIBATCH_LEASE_S", "60"))
# The store's clock, as HTTP gives it (Date, Last-Modified), counts whole seconds: a lease
# may look up to a second older than it is, so it counts as run out a second late.
CLOCK_STEP_S = 1.0
HOST = socket.gethostname()


def _process_space() -> str:
    """Where a pid means this process: the kernel's boot and this pid namespace. Two
    containers may share a host name; they never share both of these with each other."""
    parts = []
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


PROCESS_SPACE = _process_space()


def _alive_here(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_of(found: StoredObject) -> dict[str, object]:
    try:
        holder = orjson.loads(found.data)
    except orjson.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def runs_out(found: StoredObject) -> datetime:
    """When the lease in `found` runs out by the store's clock, unless renewed."""
    term = holder_of(found).get("lease_s")
    term_s = float(term) if isinstance(term, int | float) else LEASE_S
    return found.modified + timedelta(seconds=term_s + CLOCK_STEP_S)


def is_live(found: StoredObject) -> bool:
    """Whether the lease in `found` still holds: within its term by the store's clock, and
    (when its holder ran on this machine) its process still running."""
    if found.server_now > runs_out(found):
        return False
    holder = holder_of(found)
    pid = holder.get("pid")
    here = holder.get("host") == HOST and holder.get("space") == PROCESS_SPACE
    return not (here and isinstance(pid, int) and not _alive_here(pid))


def describe(found: StoredObject) -> str:
    holder = holder_of(found)
    who = f"{holder.get('what', 'a run')} (pid {holder.get('pid')} on {holder.get('host')})"
    until = runs_out(found).strftime("%H:%M:%S UTC")
    return f"{who}, whose lease runs to {until} unless renewed"


class Lease:
    """One lease object, held by this process from `take()` to `release()`."""

    def __init__(self, where: Location, what: str, term_s: float = LEASE_S) -> None:
        assert where.bucket is not None
        self.where = where
        self.what = what
        self.term_s = term_s
        self.etag: str | None = None
        self.lost = False
        self._renewed = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one renewal at a time (the thread, a publish)

    def _body(self) -> bytes:
        return orjson.dumps({"what": self.what, "host": HOST, "space": PROCESS_SPACE,
                             "pid": os.getpid(), "lease_s": self.term_s})  # fmt: skip

    def take(self) -> StoredObject | None:
        """Hold the lease (None), or the live holder's lease object when another has it."""
        bucket, key = clients()[0], self.where.key
        assert self.where.bucket is not None
        for _ in range(5):  # each turn a conditional write; only a race makes another
            etag = bucket.create(self.where.bucket, key, self._body())
            if etag is None:
                found = bucket.read(self.where.bucket, key)
                if found is None:
                    continue  # released in between: create it again
                if is_live(found):
                    return found
                etag = bucket.replace(self.where.bucket, key, self._body(), found.etag)
                if etag is None:
                    continue  # another run took it over first: look again
            self.etag = etag
            self._renewed = time.monotonic()
            self._thread = threading.Thread(target=self._keep, name="aibatch-lease", daemon=True)
            self._thread.start()
            return None
        raise BucketError(f"{self.where}: the lock kept changing under five attempts to take it")

    def _keep(self) -> None:
        while not self._stop.wait(self.term_s / 3):
            self.renew()
            if self.lost:
                return

    def renew(self) -> None:
        """Extend the term; a refusal (another run took the lease over) marks it lost."""
        with self._lock:
            if self.lost or self.etag is None:
                return
            assert self.where.bucket is not None
            try:
                etag = clients()[0].replace(
                    self.where.bucket, self.where.key, self._body(), self.etag
                )
            except BucketError:
                # The store cannot be reached now: try again, until the term has passed.
                if time.monotonic() - self._renewed > self.term_s:
                    self.lost = True
                return
            if etag is None:
                self.lost = True
                return
            self.etag = etag
            self._renewed = time.monotonic()

    def check(self) -> None:
        """LeaseLost if the lease is lost; renewed first when a third of the term has
        passed, so a publish never starts on a lease about to run out."""
        if time.monotonic() - self._renewed > self.term_s / 3:
            self.renew()
        if self.lost:
            raise LeaseLost(
                f"{self.where}: this run lost the output's lock (it went more than "
                f"{self.term_s:.0f} s without renewing it, and another run took it over); it "
                "stops here. Its unpublished answers stay in its journal for the next run"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.etag is not None and not self.lost:
                assert self.where.bucket is not None
                # Unreachable now: the lease runs out by itself at the end of its term.
                with contextlib.suppress(BucketError):
                    clients()[0].delete(self.where.bucket, self.where.key, self.etag)
            self.etag = None


def live_lease(where: Location) -> StoredObject | None:
    """The lease object at `where` if one is live (another run holds it)."""
    assert where.bucket is not None
    found = clients()[0].read(where.bucket, where.key)
    return found if found is not None and is_live(found) else None
