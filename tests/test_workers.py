"""hubvram.workers.Workers: the header reads' daemon threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_EXCEPTION, wait

import pytest

from hubvram.workers import Workers


def test_results_exceptions_and_as_many_threads_as_tasks_waiting_together():
    pool = Workers(8)
    barrier = threading.Barrier(6, timeout=5)  # six tasks that can only finish together: six threads
    futures = [pool.submit(lambda i=i: (barrier.wait(), i)[1]) for i in range(6)]
    assert [f.result(5) for f in futures] == list(range(6)) and pool.threads == 6
    boom = pool.submit(lambda: 1 / 0)
    wait([boom], timeout=5, return_when=FIRST_EXCEPTION)
    assert isinstance(boom.exception(), ZeroDivisionError)
    assert pool.submit(lambda: 7).result(5) == 7 and pool.threads == 6  # idle threads are reused
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("hubvram-worker"))
    pool.close()


def test_at_most_max_threads_and_the_rest_queue():
    pool = Workers(2)
    gate = threading.Event()
    futures = [pool.submit(gate.wait, 5) for _ in range(5)]
    time.sleep(0.05)
    assert pool.threads == 2 and sum(f.running() for f in futures) == 2
    gate.set()
    assert all(f.result(5) for f in futures)
    pool.close()


def test_start_makes_idle_threads_until_told_to_stop():
    pool = Workers(64)
    pool.start(10)
    assert pool.threads == 10
    stop = threading.Event()
    stop.set()
    pool.start(64, stop)
    assert pool.threads == 10
    assert [pool.submit(lambda i=i: i).result(5) for i in range(10)] == list(range(10)) and pool.threads == 10
    pool.close()


def test_close_cancels_queued_tasks_does_not_wait_and_refuses_new_ones():
    pool = Workers(1)
    gate = threading.Event()
    running = pool.submit(gate.wait, 5)
    queued = pool.submit(lambda: "never")
    time.sleep(0.05)
    t = time.perf_counter()
    pool.close()
    assert time.perf_counter() - t < 0.5 and queued.cancelled() and not running.done()
    gate.set()
    assert running.result(5) is True
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(lambda: 1)
