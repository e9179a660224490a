"""One live run per workdir: an exclusive ``flock`` on ``<workdir>/.mmjax.lock`` held by the
training process (process 0 of a multi-process run) for the whole run.

The kernel drops a ``flock`` when its process dies (even on kill -9), so a lock left by a dead run
never blocks; the file then still names the dead process, and the next run says it cleared it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time

LOCK_NAME = ".mmjax.lock"


class WorkdirBusy(RuntimeError):
    """Another live process is training in this workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkdirLock:
    """Context manager: ``with WorkdirLock(workdir): ...``; raises `WorkdirBusy` naming the holder."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
        self.enabled = enabled
        self._fh = None

    def __enter__(self):
        if not self.enabled:
            return self
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise WorkdirBusy(f"{os.path.dirname(self.path)} is in use by a live run ({holder}); wait for it to "
                              "finish or use another --workdir") from None
        fh.seek(0)
        previous = fh.read().split()
        if previous and previous[0].startswith("pid=") and previous[0][4:].isdigit():
            pid = int(previous[0][4:])
            if pid != os.getpid() and not _alive(pid):
                print(f"cleared the stale lock of dead process {pid} in {os.path.dirname(self.path)}", flush=True)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid={os.getpid()} host={socket.gethostname()} since={time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc):
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()  # a clean exit leaves no holder behind (only a killed run does)
            self._fh.flush()
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
