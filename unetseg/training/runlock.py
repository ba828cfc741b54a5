"""One training at a time per run folder: a lock file that names its owner.

"Refuses a folder that already holds a run" is a check, not a lock: two ``unetseg train``
started together into one ``--out`` both pass it and then interleave ``config.yaml``,
checkpoints and ``metrics.csv``. :class:`RunLock` makes the claim exclusive. The first
process creates ``<run>/.lock`` with ``O_CREAT | O_EXCL`` (atomic on every local file system
and on NFSv3+), writes its PID, host and start time into it, and removes it when the run
ends, normally or by an exception.

A run killed with ``kill -9`` cannot remove its lock, so a lock is *stale* when it was taken
on this host by a process that no longer exists; the next run takes it over and says so.
Processes on another host cannot be seen from here (a preempted SLURM job resumed on another
node is the everyday case), so the owner also *beats*: a thread touches the lock's
modification time every :data:`HEARTBEAT_S` seconds while the run holds it. A lock from
another host whose heartbeat stopped more than :data:`STALE_AFTER_S` ago is taken over too;
one that still beats, or one written by a version that did not beat, is a refusal naming the
folder, the host and the PID. The modification time is the file server's clock on a shared
file system, and the wait is ten heartbeats, so a few seconds of clock skew between nodes
cannot make a live lock look dead. While it holds the lock, the owner also holds ``flock``
on the file: two processes that find the same stale lock at once cannot both take it over,
because only one of them gets the ``flock``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unetseg.training.errors import TrainingError

try:
    import fcntl
except ImportError:  # not POSIX: the O_EXCL file alone
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
HEARTBEAT_S = 30.0  # how often a held lock's modification time is renewed
STALE_AFTER_S = 300.0  # a lock of another host whose heartbeat is older than this was left by a dead run


class RunLockedError(TrainingError):
    """The run folder belongs to another live process (or to one on another host)."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _try_flock(fd: int) -> bool:
    """Take an exclusive ``flock`` without waiting; True where the file system has none."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP: no flock here, the PID check decides alone
        return True
    return True


def _read_owner(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        owner = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    started = owner.get("started")
    when = (
        f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
        if isinstance(started, (int, float))
        else ""
    )
    return f"process {owner.get('pid', '?')} on {owner.get('host', '?')}{when}"


class RunLock:
    """An exclusive claim on ``folder`` for this process; a context manager.

    ``log`` receives the one-line note when a stale lock is taken over.
    """

    def __init__(self, folder: Path, log: Callable[[str], None] = print) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.log = log
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> RunLock:
        for _ in range(5):  # a lock released or removed between two steps: look again
            if self._create() or self._take_over():
                return self
        raise RunLockedError(f"{self.folder}: could not lock the run folder ({self.path} keeps changing)")

    def _owner_record(self) -> bytes:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "heartbeat_s": HEARTBEAT_S}
        return json.dumps(owner).encode()

    def _claim(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, self._owner_record())
        os.fsync(fd)
        self._fd = fd
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="unetseg-lock-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        """Renew the lock's modification time until released; dies with the process, which is
        what lets another host see that the run is gone."""
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:  # the folder went away: nothing left to guard
                return

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return False
        if not _try_flock(fd):  # another process found it empty and took it first: it decides
            os.close(fd)
            return False
        self._claim(fd)
        return True

    def _take_over(self) -> bool:
        """Take a stale lock; refuse a live one. False when the lock vanished meanwhile."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            if not _try_flock(fd):
                raise RunLockedError(self._refusal(_read_owner(fd)))
            if not self._same_file(fd):  # released and removed between open and flock
                os.close(fd)
                return False
            owner = _read_owner(fd)
            why = "which is no longer running"
            if owner.get("host") != socket.gethostname() and owner:
                silent = self._silent_for(fd)
                if silent is None:
                    raise RunLockedError(self._refusal(owner, elsewhere=True))
                why = f"whose heartbeat stopped {silent:.0f} s ago"
            pid = owner.get("pid")
            here = owner.get("host") == socket.gethostname()
            if here and isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
                raise RunLockedError(self._refusal(owner))
        except BaseException:
            os.close(fd)
            raise
        self.log(f"note: {self.folder} was locked by {_describe(owner)}, {why}; taking the run folder over")
        self._claim(fd)
        return True

    def _silent_for(self, fd: int) -> float | None:
        """Seconds since a beating owner last renewed the lock, where that is over
        :data:`STALE_AFTER_S`; None while it beats, or where the owner never beat."""
        if not isinstance(_read_owner(fd).get("heartbeat_s"), (int, float)):
            return None
        silent = time.time() - os.fstat(fd).st_mtime
        return silent if silent > STALE_AFTER_S else None

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _refusal(self, owner: dict[str, Any], elsewhere: bool = False) -> str:
        why = (
            "its heartbeat is recent, or it never beat, and unetseg cannot see that host's processes from here"
            if elsewhere
            else "it is still running"
        )
        return (
            f"{self.folder} is in use by another training ({_describe(owner)}; {why}): two runs in one folder would "
            f"mix their checkpoints and metrics. Wait for it to finish or choose another output directory (--out); "
            f"if no such run is going on, delete {self.path}"
        )

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and drop the claim."""
        if self._fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        try:
            if self._same_file(self._fd):
                self.path.unlink()
        except OSError:  # the folder went away or became read-only: nothing left to guard
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
