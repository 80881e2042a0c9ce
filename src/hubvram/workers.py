"""The header reads' threads: a pool of daemon threads that closing never waits for.

A 405B checkpoint's 191 header reads go out at once, one thread each, and the threads are started while
the revision lookup is in flight (:meth:`Workers.start`). ``ThreadPoolExecutor`` would do, but its threads
are joined when it shuts down and again at interpreter exit: ~0.2 ms each, 50 ms for 256 idle threads at
the end of every cold run. Here :meth:`Workers.close` only tells the idle threads to stop, and they are
daemon threads, so a process that is done exits without waiting for them. Tasks return
:class:`concurrent.futures.Future` objects, so ``wait``/``cancel`` work as with an executor.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

_STOP = object()


class Workers:
    """At most ``max_threads`` daemon threads running submitted callables (thread-safe)."""

    def __init__(self, max_threads: int, name: str = "hubvram-worker") -> None:
        self.max_threads = max(1, int(max_threads))
        self._name = name
        self._tasks: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            self._tasks.put((future, fn, args))
            if self._idle:
                self._idle -= 1
                return future
            if self._threads < self.max_threads:
                self._spawn()
        return future

    def start(self, n: int, until: threading.Event | None = None) -> None:
        """Start idle threads up to ``n`` in all (fewer if ``until`` is set meanwhile): thread starts cost
        ~0.15 ms each, better spent while the process would be waiting for the network anyway."""
        while until is None or not until.is_set():
            with self._lock:
                if self._closed or self._threads >= min(n, self.max_threads):
                    return
                self._idle += 1
                self._spawn()

    def close(self) -> None:
        """Queued tasks not yet started are cancelled; idle threads are told to stop (not waited for)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = self._threads
        while True:
            try:
                item = self._tasks.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                item[0].cancel()
        for _ in range(threads):
            self._tasks.put(_STOP)

    @property
    def threads(self) -> int:
        with self._lock:
            return self._threads

    # -- internals (under self._lock) --------------------------------------------------------------
    def _spawn(self) -> None:
        self._threads += 1
        threading.Thread(target=self._run, name=f"{self._name}-{self._threads}", daemon=True).start()

    def _run(self) -> None:
        while True:
            item = self._tasks.get()
            if item is _STOP:
                return
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as e:  # noqa: BLE001 - handed to the waiter, as an executor does
                    future.set_exception(e)
                else:
                    future.set_result(result)
                del future, fn, args, item
            with self._lock:
                self._idle += 1
