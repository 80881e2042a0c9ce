"""What the hostile-network / hostile-input tests tried, counted by the tests themselves.

tests/conftest.py re-exports :func:`pytest_terminal_summary`, which prints one line at the end of a run::

    hostile: N hostile inputs, M injected faults, K fuzz cases — 0 crashes, 0 token leaks

* a **hostile input** is one malformed model reference, config.json, safetensors header or index file fed to
  hubvram (counted by :func:`expect_error` / :func:`cli_error` / :func:`add`);
* an **injected fault** is one faulted response the fake Hub actually served (``RequestRecord.fault``), summed
  when a fake Hub made by :func:`fault_hub` is stopped;
* a **fuzz case** is one hypothesis example run through a parser;
* a **crash** is an exception that is not a :class:`hubvram.errors.HubvramError`, a traceback in CLI output
  without ``--debug``, or an exit code outside the documented ones; a **token leak** is the test token found
  in a file under a cache folder. Each is counted when seen and the test that saw it fails.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable

from hubvram.errors import HubvramError

_lock = threading.Lock()
COUNTS: Counter[str] = Counter()
DOCUMENTED_EXIT_CODES = {0, 1, 2, 3, 4}


def add(kind: str, n: int = 1) -> None:
    """kind: hostile_inputs | faults | fuzz_cases | crashes | token_leaks."""
    with _lock:
        COUNTS[kind] += n


def expect_error(fn: Callable[[], Any], error: type[HubvramError] = HubvramError) -> HubvramError:
    """Run ``fn`` on one hostile input: it must raise ``error``; anything else not a HubvramError is a crash."""
    add("hostile_inputs")
    try:
        fn()
    except error as e:
        return e
    except HubvramError:
        raise
    except BaseException:
        add("crashes")
        raise
    raise AssertionError(f"no {error.__name__} raised")


def check_cli(result: Any, *, debug: bool = False) -> None:
    """A CliRunner result (or a CompletedProcess) must end with a documented exit code and no traceback."""
    code = getattr(result, "exit_code", getattr(result, "returncode", None))
    exc = getattr(result, "exception", None)
    text = (getattr(result, "output", "") or "") + (getattr(result, "stderr", "") or "")
    crashed = (code not in DOCUMENTED_EXIT_CODES or (exc is not None and not isinstance(exc, SystemExit))
               or (not debug and "Traceback" in text))
    if crashed:
        add("crashes")
        raise AssertionError(f"crash: exit {code}, {exc!r}\n{text[-3000:]}")


def cli_error(result: Any) -> str:
    """Count one hostile input given to the CLI; return its stderr, which must be exactly one line."""
    add("hostile_inputs")
    check_cli(result)
    err = result.stderr
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    return err.rstrip("\n")


def summary() -> str | None:
    with _lock:
        c = dict(COUNTS)
    if not any(c.get(k) for k in ("hostile_inputs", "faults", "fuzz_cases")):
        return None
    return (f"hostile: {c.get('hostile_inputs', 0)} hostile inputs, {c.get('faults', 0)} injected faults, "
            f"{c.get('fuzz_cases', 0)} fuzz cases — {c.get('crashes', 0)} crashes, "
            f"{c.get('token_leaks', 0)} token leaks")


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest hook
    line = summary()
    if line:
        terminalreporter.write_line(line)
