"""ThreadPool: daemon worker threads for ``Reactor.run_in_thread``.

Why not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined at
interpreter exit, so one blocking call still running when the server's
shutdown deadline passes keeps the process alive until the call returns
(a route sleeping 20 s held the exit for 20 s). A server must exit by its
deadline (systemd's ``TimeoutStopSec`` would kill it otherwise), so these
threads are daemons: work still running at exit is abandoned.

Threads start lazily, one per submission while none is idle, up to ``size``.
The queue itself is unbounded; its callers bound it (each handler caps the
requests it has in flight per connection).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import final

__all__ = ["ThreadPool"]


@final
class ThreadPool:
    """A fixed-size pool of daemon threads that run submitted callables.

    Args:
        size: the most threads ever started.
        name_prefix: thread names are ``f"{name_prefix}-{n}"``.
    """

    def __init__(self, size: int, *, name_prefix: str = "reactorkit-worker") -> None:
        if size < 1:
            raise ValueError(f"a thread pool needs at least 1 thread, got {size!r}")
        self.size = size
        self.name_prefix = name_prefix
        self._queue: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._busy = 0
        self._shutdown = False

    @property
    def busy(self) -> int:
        """Work items submitted and not yet finished (queued or running)."""
        return self._busy

    def submit(self, work: Callable[[], object]) -> None:
        """Run ``work()`` on a pool thread. Exceptions it raises are its own business.

        Raises:
            RuntimeError: the pool was shut down.
        """
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a thread pool after shutdown()")
            self._busy += 1
        self._queue.put(work)
        if not self._idle.acquire(blocking=False) and len(self._threads) < self.size:
            thread = threading.Thread(
                target=self._worker,
                name=f"{self.name_prefix}-{len(self._threads)}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def shutdown(self) -> None:
        """Let every thread exit once the work queued before now is done; never waits."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
        for _ in self._threads:
            self._queue.put(None)

    def _worker(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            try:
                work()
            except BaseException:  # run_in_thread's work delivers its own errors
                pass
            finally:
                with self._lock:
                    self._busy -= 1
            self._idle.release()
