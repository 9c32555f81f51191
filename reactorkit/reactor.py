"""The reactor: one thread, one selector, timers and ready callbacks.

Theory of operation
-------------------
The reactor is a microkernel. It owns a selector, a heap of timers, a
deque of ready callbacks and a wake-up socketpair; everything else
(accepting, buffering, protocols) lives above it in ``listener``,
``connection`` and the handlers. On Linux the selector is an
:class:`~reactorkit.poller.EpollPoller` (``select.epoll`` with an ``fd ->
callback`` table, no ``SelectorKey`` per event); elsewhere, or when one is
passed in, a ``selectors`` selector.

* Every registered descriptor has a callable taking the ready ``mask``
  (``selectors`` bits: 1 read, 2 write). Dispatch is one dict lookup and one
  call: ``callbacks[fd](mask)`` (``key.data(mask)`` with ``selectors``). A
  descriptor unregistered by an earlier callback of the same batch gets no
  call, nor does one registered by it: its number may be a closed
  descriptor's, reused by an accept, whose event this batch still holds.
  (The poller keeps a registration aside until just before its next poll,
  so the lookup itself misses: no test per event.)
  Whoever registers decides what that callable is (a connection's bound
  ``_on_event``, a listener's ``_accept_ready``).
* Each loop iteration: compute the timeout (0 when callbacks are ready or
  a stop is pending, else until the earliest timer, else forever),
  ``select``, stamp ``self.time`` once, dispatch I/O, run the timers that
  were due when the pass began, then the callbacks that were ready before
  it (what they schedule waits for the next pass, so neither a timer nor a
  callback storm can starve I/O), then return if ``stop()`` was called.
* The failure boundary: every callback the loop makes is guarded. I/O
  dispatch is a ``try`` around ``key.data(mask)`` (free until it catches on
  CPython 3.11+). ``current_owner`` names the connection whose handler is
  running; timers, ready callbacks and ``run_in_thread`` futures scheduled
  meanwhile remember it, and an exception from them goes to its
  ``callback_failed`` (log with listener, plugin, peer; close it).
* ``self.time`` is read by connections to stamp activity, so no clock call
  and no timer push happens per I/O event; idle timeouts are swept lazily.
* ``call_soon_threadsafe`` appends to the deque (atomic in CPython) and
  writes one byte to the wake-up socket, which the selector watches, so a
  blocked ``select`` returns.
* Signals: when ``run(install_signal_handlers=True)`` is called from the main
  thread, ``signal.set_wakeup_fd`` points at the same wake-up socket and the
  Python-level handler only appends the handler registered with
  ``add_signal_handler`` to the ready callbacks (a deque append, atomic
  wherever between two bytecodes it runs); it then runs as an ordinary
  callback on this thread, on the pass the signal arrived in or the next.
  One queue, not two: a pass tests one deque for work, not a second one for
  signals that are almost never there.
* ``run_in_thread`` submits to a :class:`~reactorkit.threadpool.ThreadPool`
  of at most ``threads`` daemon threads and returns a :class:`Future` whose
  done-callbacks are delivered back through ``call_soon_threadsafe``:
  blocking work never runs on the loop, and never holds the process at exit.
* ``stop()`` makes ``run()`` return after the current pass. Graceful
  shutdown (stop accepting, drain, close) is the server's job, built from
  these pieces; the reactor only runs what it is given.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import heapq
import itertools
import logging
import selectors
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, final

from reactorkit.errors import ReactorStateError
from reactorkit.poller import EpollPoller, make_poller
from reactorkit.threadpool import ThreadPool

if TYPE_CHECKING:
    from reactorkit.connector import Connector
    from reactorkit.handler import Handler

__all__ = ["DEFAULT_THREADS", "CallbackOwner", "Future", "Reactor", "TimerHandle"]

log = logging.getLogger("reactorkit.reactor")

DEFAULT_THREADS = 8

T = TypeVar("T")


@final
class TimerHandle:
    """A scheduled call; :meth:`cancel` it to stop it from running."""

    __slots__ = ("_args", "_callback", "_cancelled", "_owner", "_reactor", "when")

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        reactor: Reactor,
        owner: CallbackOwner | None = None,
    ) -> None:
        self.when = when
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._reactor = reactor
        self._owner = owner

    def cancel(self) -> None:
        """Stop the call from running. Cancelling twice, or after it ran, is a no-op.

        Safe from any thread (a ``run_in_thread`` function may cancel): the
        heap is only ever touched on the reactor thread.
        """
        if not self._cancelled:
            self._cancelled = True
            # Drop the references now, as asyncio does: a cancelled timer
            # waits in the heap until it is due, and must not keep its
            # callback's owner (a handler, a connection) alive until then.
            self._callback = _cancelled_callback
            self._args = ()
            self._owner = None
            reactor = self._reactor
            if reactor._in_reactor_thread():
                reactor._timer_cancelled()
            else:
                # Counting may rebuild the heap, which would race the loop's
                # heappush and lose the timers pushed meanwhile.
                reactor.call_soon_threadsafe(reactor._timer_cancelled)

    def cancelled(self) -> bool:
        """Return True once :meth:`cancel` was called."""
        return self._cancelled

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        return f"<TimerHandle when={self.when:.3f} {self._callback!r}{state}>"


@final
class Future(Generic[T]):
    """The result of :meth:`Reactor.run_in_thread`.

    Done-callbacks always run on the reactor thread, one pass after the work
    finished, with the future as their only argument.
    """

    __slots__ = ("_callbacks", "_done", "_exception", "_owner", "_reactor", "_result")

    def __init__(self, reactor: Reactor, owner: CallbackOwner | None = None) -> None:
        self._reactor = reactor
        self._owner = owner
        self._done = False
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Future[T]], object]] = []

    def done(self) -> bool:
        """Return True once a result or an exception is set."""
        return self._done

    def result(self) -> T:
        """Return the result, or raise the exception the work raised.

        Raises:
            ReactorStateError: the work has not finished yet.
        """
        if not self._done:
            raise ReactorStateError("the future is not done yet")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[return-value]

    def exception(self) -> BaseException | None:
        """Return the exception the work raised, or None."""
        if not self._done:
            raise ReactorStateError("the future is not done yet")
        return self._exception

    def add_done_callback(self, callback: Callable[[Future[T]], object]) -> None:
        """Call ``callback(future)`` on the reactor thread when done (on the next pass, if it is).

        Safe from any thread: from another thread the callback is handed to
        the reactor thread first, so it can never be lost to a race with the
        work finishing.
        """
        reactor = self._reactor
        if not reactor._in_reactor_thread():
            reactor.call_soon_threadsafe(self.add_done_callback, callback)
        elif self._done:
            reactor._ready.append((callback, (self,), self._owner))
        else:
            self._callbacks.append(callback)

    def _set(self, result: T | None, exception: BaseException | None) -> None:
        self._result = result
        self._exception = exception
        self._done = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._reactor._run_callback(callback, (self,), self._owner)


class CallbackOwner(Protocol):
    """Whoever answers for the callbacks scheduled while it was current.

    A connection makes itself ``reactor.current_owner`` while its handler
    runs; every timer, ready callback and ``run_in_thread`` result scheduled
    meanwhile remembers it, so a later exception in one of them reaches
    :meth:`callback_failed` (which logs it with the listener, peer and plugin
    and closes that connection) instead of an anonymous log line.
    """

    def callback_failed(self, callback: Callable[..., object], exc: BaseException) -> None:
        """``callback``, scheduled on this owner's behalf, raised ``exc``."""


class Reactor:
    """A single-threaded selector event loop.

    Args:
        clock: a monotonic clock returning seconds; tests inject a fake one.
        threads: the size of the :meth:`run_in_thread` pool.
        selector: a ``selectors.BaseSelector``; the default is an
            :class:`~reactorkit.poller.EpollPoller` on Linux, else
            ``selectors.DefaultSelector()``.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        threads: int = DEFAULT_THREADS,
        selector: selectors.BaseSelector | None = None,
    ) -> None:
        self.clock = clock
        #: The clock read once per loop pass; use it instead of calling the clock.
        self.time = clock()
        self.threads = threads
        self.selector = selector if selector is not None else make_poller()
        #: Who answers for callbacks scheduled right now (see :class:`CallbackOwner`).
        self.current_owner: CallbackOwner | None = None
        self._ready: collections.deque[
            tuple[Callable[..., object], tuple[Any, ...], CallbackOwner | None]
        ] = collections.deque()
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._cancelled_timers = 0
        self._sequence = itertools.count()
        self._running = False
        self._stopping = False
        self._closed = False
        self._thread_id: int | None = None
        self._pool: ThreadPool | None = None
        self._signal_handlers: dict[int, Callable[[int], object]] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # A plain function, not a bound method: the selector must not hold a
        # reference back to the reactor, or a reactor dropped without close()
        # would wait for the cycle collector to free its descriptors.
        self.selector.register(
            self._wake_r, selectors.EVENT_READ, functools.partial(_drain_wakeups, self._wake_r)
        )
        # A reactor dropped without close() still releases its descriptors
        # when it is freed; the finalizer holds them, never the reactor.
        self._release = weakref.finalize(
            self, _release_descriptors, self.selector, self._wake_r, self._wake_w
        )

    # -- registration ------------------------------------------------------

    def register(self, fileobj: Any, events: int, callback: Callable[[int], object]) -> None:
        """Watch ``fileobj`` for ``events``; ``callback(mask)`` runs when ready.

        If ``callback`` raises, the exception is logged and ``fileobj`` is
        unregistered (a level-triggered callback that keeps raising would
        otherwise spin the loop), unless ``callback`` is a bound method of a
        :class:`CallbackOwner`, whose ``callback_failed`` then decides.
        """
        self.selector.register(fileobj, events, callback)

    def modify(self, fileobj: Any, events: int, callback: Callable[[int], object]) -> None:
        """Change the events watched for an already registered ``fileobj``."""
        self.selector.modify(fileobj, events, callback)

    def unregister(self, fileobj: Any) -> None:
        """Stop watching ``fileobj``."""
        self.selector.unregister(fileobj)

    # -- scheduling --------------------------------------------------------

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the next loop pass. Reactor thread only."""
        self._ready.append((callback, args, self.current_owner))

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        """Like :meth:`call_soon`, from any thread; wakes a blocked ``select``."""
        self._ready.append((callback, args, None))
        self._wake()

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` after ``delay`` seconds; returns a cancellable handle.

        Reactor thread only (from another thread, ``call_soon_threadsafe`` it);
        the handle's ``cancel()`` is safe from any thread.
        """
        return self.call_at(self.clock() + max(0.0, delay), callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` once the clock reaches ``when``. Reactor thread only."""
        handle = TimerHandle(when, callback, args, self, self.current_owner)
        heapq.heappush(self._timers, (when, next(self._sequence), handle))
        return handle

    def run_in_thread(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run blocking or CPU-bound ``fn(*args)`` on the thread pool.

        The pool's threads are daemon threads: work still running when the
        process exits is abandoned, so a stuck call cannot hold the process
        past its shutdown deadline. ``SystemExit`` or ``KeyboardInterrupt``
        raised by ``fn`` (``sys.exit()``, argparse on bad input) reaches the
        future as a ``RuntimeError`` caused by it: on a worker thread they end
        the work, never the server. Work waits in an unbounded queue; the
        handlers bound it (each caps its requests in flight per connection).

        Returns:
            A :class:`Future`; its done-callbacks run on the reactor thread.
        """
        if self._pool is None:
            self._pool = ThreadPool(self.threads, name_prefix="reactorkit-worker")
        future: Future[T] = Future(self, self.current_owner)

        def work() -> None:
            try:
                result = fn(*args)
            except (KeyboardInterrupt, SystemExit) as exc:
                # On a worker thread they end only that thread; re-raised by
                # result() on the reactor thread they would stop the server.
                error = RuntimeError(f"{fn!r} raised {exc!r} on a pool thread")
                error.__cause__ = exc
                self.call_soon_threadsafe(future._set, None, error)
            except BaseException as exc:  # delivered to the reactor thread
                self.call_soon_threadsafe(future._set, None, exc)
            else:
                self.call_soon_threadsafe(future._set, result, None)

        self._pool.submit(work)
        return future

    @property
    def threads_busy(self) -> int:
        """Work items submitted to :meth:`run_in_thread` and not yet finished."""
        return self._pool.busy if self._pool is not None else 0

    @property
    def timers_pending(self) -> int:
        """Timers scheduled and not yet run (cancelled ones excluded); for metrics."""
        return len(self._timers) - self._cancelled_timers

    # -- signals -----------------------------------------------------------

    def add_signal_handler(self, signum: int, callback: Callable[[int], object]) -> None:
        """Run ``callback(signum)`` on the reactor thread when ``signum`` arrives.

        Takes effect when :meth:`run` installs signal handlers (main thread only).
        """
        self._signal_handlers[signum] = callback

    def _signal_received(self, signum: int, frame: object) -> None:
        # Runs between bytecodes of the main thread; only queue, the wake-up
        # fd has already made select() return.
        callback = self._signal_handlers.get(signum)
        if callback is not None:
            self._ready.append((callback, (signum,), None))

    # -- running -----------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True while :meth:`run` is executing."""
        return self._running

    def stop(self) -> None:
        """Make :meth:`run` return after the current pass. Safe from any thread.

        Called before :meth:`run`, it makes the next ``run()`` do one pass
        (poll without blocking, run what is due) and return, as asyncio does.
        """
        self._stopping = True
        if self._thread_id is not None and self._thread_id != threading.get_ident():
            self._wake()

    def run(self, *, install_signal_handlers: bool = False) -> None:
        """Run the loop until :meth:`stop` is called.

        Args:
            install_signal_handlers: route the signals given to
                :meth:`add_signal_handler` through the wake-up socket (no
                others: SIGINT keeps raising KeyboardInterrupt unless a
                handler was added for it). Only possible on the main thread.
        """
        if self._running:
            raise ReactorStateError("the reactor is already running")
        if self._closed:
            raise ReactorStateError("the reactor is closed")
        self._running = True
        self._thread_id = threading.get_ident()
        previous: dict[int, Any] = {}
        old_wakeup_fd = None
        if install_signal_handlers:
            old_wakeup_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
            for signum in self._signal_handlers:
                previous[signum] = signal.signal(signum, self._signal_received)
        try:
            self._loop()
        finally:
            if install_signal_handlers:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
                signal.set_wakeup_fd(old_wakeup_fd if old_wakeup_fd is not None else -1)
            self._running = False
            self._stopping = False
            self._thread_id = None

    def _loop(self) -> None:
        selector = self.selector
        if isinstance(selector, EpollPoller):
            self._loop_epoll(selector)
            return
        select = selector.select
        ready = self._ready
        timers = self._timers
        clock = self.clock
        while True:
            if ready or self._stopping:
                timeout: float | None = 0
            elif timers:
                timeout = max(0.0, timers[0][0] - clock())
            else:
                timeout = None
            events = select(timeout)
            self.time = now = clock()
            key_map = selector.get_map()
            for key, mask in events:
                current = key_map.get(key.fd)
                if current is None or current.data is not key.data:
                    # Unregistered by a callback earlier in this batch (its
                    # number perhaps reused since): the key is stale.
                    continue
                # One guarded dispatch for every I/O callback: a try block
                # costs nothing until it catches (CPython >= 3.11).
                try:
                    key.data(mask)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:
                    self._io_callback_failed(key.fileobj, key.data, exc)
            if timers and timers[0][0] <= now:
                self._run_due_timers(now)
            if ready:
                self._run_ready()
            if self._stopping:
                return

    def _loop_epoll(self, poller: EpollPoller) -> None:
        # The same pass as _loop, with epoll's (fd, events) pairs indexed
        # straight into the fd -> callback table (see reactorkit.poller).
        # Written out rather than shared: at one busy connection a pass is
        # one request, and every call here is paid per request.
        poll = poller.epoll.poll
        callbacks = poller.callbacks
        pending = poller.pending
        take_pending = poller.take_pending
        ready_mask = poller.ready_mask
        ready = self._ready
        timers = self._timers
        clock = self.clock
        while True:
            if ready or self._stopping:
                timeout: float | None = 0
            elif timers:
                timeout = timers[0][0] - clock()
                # A comparison, not a max() call; against 0.0, not 0: float to
                # float is specialized, float to int a generic rich compare.
                if timeout < 0.0:
                    timeout = 0
            else:
                timeout = None
            if pending:
                take_pending()
            events = poll(timeout, len(callbacks))
            self.time = now = clock()
            for fd, epoll_events in events:
                try:
                    callback = callbacks[fd]
                except KeyError:
                    # Unregistered by a callback earlier in this batch, and
                    # perhaps its number reused since (an accept): a new
                    # registration waits in poller.pending until the next
                    # poll, so the event, the old file's, finds no callback.
                    continue
                try:
                    # EPOLLIN alone is EVENT_READ: the common case needs no lookup.
                    callback(1 if epoll_events == 1 else ready_mask(fd, epoll_events))
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:
                    self._io_callback_failed(fd, callback, exc)
            if timers and timers[0][0] <= now:
                self._run_due_timers(now)
            if ready:
                self._run_ready()
            if self._stopping:
                return

    def _run_ready(self) -> None:
        # Only the callbacks ready before this pass: what they schedule waits
        # for the next one, so a callback storm cannot starve I/O.
        ready = self._ready
        for _ in range(len(ready)):
            callback, args, owner = ready.popleft()
            self._run_callback(callback, args, owner)

    def _run_due_timers(self, now: float) -> None:
        # Only the timers due when this pass began: one that schedules
        # another for "now" waits for the next pass, so timers cannot starve
        # I/O (asyncio does the same).
        timers = self._timers
        due = []
        while timers and timers[0][0] <= now:
            due.append(heapq.heappop(timers)[2])
        for handle in due:
            if handle._cancelled:
                if self._cancelled_timers:
                    self._cancelled_timers -= 1
                continue
            handle._cancelled = True  # ran: a later cancel() is a no-op
            self._run_callback(handle._callback, handle._args, handle._owner)

    def _run_callback(
        self, callback: Callable[..., object], args: tuple[Any, ...], owner: CallbackOwner | None
    ) -> None:
        previous = self.current_owner
        self.current_owner = owner
        try:
            callback(*args)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            if owner is not None:
                self._owner_failed(owner, callback, exc)
            else:
                log.error("unhandled exception in callback %r", callback, exc_info=exc)
        finally:
            self.current_owner = previous

    def _owner_failed(
        self, owner: CallbackOwner, callback: Callable[..., object], exc: BaseException
    ) -> None:
        try:
            owner.callback_failed(callback, exc)
        except Exception as error:  # the safety net itself must not reach the loop
            log.error("%r.callback_failed raised", owner, exc_info=error)

    def _io_callback_failed(
        self, fileobj: Any, callback: Callable[[int], object], exc: BaseException
    ) -> None:
        self.current_owner = None
        owner = getattr(callback, "__self__", None)
        if owner is not None and hasattr(owner, "callback_failed"):
            self._owner_failed(owner, callback, exc)
            return
        log.error(
            "unhandled exception in I/O callback %r; unregistering %r",
            callback,
            fileobj,
            exc_info=exc,
        )
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fileobj)

    def _in_reactor_thread(self) -> bool:
        return self._thread_id is None or self._thread_id == threading.get_ident()

    def _timer_cancelled(self) -> None:
        self._cancelled_timers += 1
        # Lazy deletion keeps cancel() O(1); rebuild once garbage dominates.
        if self._cancelled_timers > 256 and self._cancelled_timers * 2 > len(self._timers):
            # In place: the running loop holds a reference to this list.
            self._timers[:] = [t for t in self._timers if not t[2]._cancelled]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # already full of wake-ups: select() will return anyway
        except OSError:
            pass  # closed during shutdown

    def close(self) -> None:
        """Release the selector, the wake-up socket and the thread pool.

        Work still running on the pool is not waited for (see :meth:`run_in_thread`).
        """
        if self._closed:
            return
        if self._running:
            raise ReactorStateError("cannot close a running reactor")
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown()
        self._release()

    def __repr__(self) -> str:
        state = "running" if self._running else ("closed" if self._closed else "idle")
        return f"<Reactor {state} timers={len(self._timers)} ready={len(self._ready)}>"

    # -- outbound connections (the connector module does the work) ----------

    def connect_tcp(
        self, host: str, port: int, handler: Handler, *, timeout: float = 10.0, **limits: int
    ) -> Connector:
        """Connect to ``host:port``; ``handler`` gets a :class:`Connection` once up.

        Failure goes to the returned connector's done-callbacks as a
        :class:`~reactorkit.errors.ConnectError`, never into the loop. See
        :func:`reactorkit.connector.connect_tcp` (``limits``: ``high_water``,
        ``low_water``, ``max_read``).
        """
        from reactorkit.connector import connect_tcp

        return connect_tcp(self, host, port, handler, timeout=timeout, **limits)

    def connect_unix(
        self, path: str, handler: Handler, *, timeout: float = 10.0, **limits: int
    ) -> Connector:
        """Connect to the UNIX socket ``path``; as :meth:`connect_tcp`."""
        from reactorkit.connector import connect_unix

        return connect_unix(self, path, handler, timeout=timeout, **limits)


def _release_descriptors(
    selector: selectors.BaseSelector, wake_r: socket.socket, wake_w: socket.socket
) -> None:
    selector.close()
    wake_r.close()
    wake_w.close()


def _cancelled_callback() -> None:
    """What a cancelled :class:`TimerHandle` holds instead of its callback."""


def _drain_wakeups(sock: socket.socket, mask: int) -> None:
    """Empty the wake-up socket; the bytes only served to end select()."""
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
