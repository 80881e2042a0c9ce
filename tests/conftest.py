"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `import fakehub` works with or without __init__.py

from fakehub import FakeHub  # noqa: E402
from hostile_stats import pytest_terminal_summary  # noqa: E402,F401 - prints the `hostile:` count line


@pytest.fixture
def fakehub():
    """A started FakeHub (CDN on the same port); stopped, with its threads joined, after the test."""
    with FakeHub() as hub:
        yield hub
    assert not hub.server_errors, "fakehub handler crashed:\n" + "\n".join(hub.server_errors)


@pytest.fixture
def make_fakehub():
    """Factory: make_fakehub(cdn_separate_port=True, ...) -> started FakeHub, stopped after the test."""
    hubs: list[FakeHub] = []

    def make(**kwargs) -> FakeHub:
        hub = FakeHub(**kwargs).start()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.stop()
    errors = [e for hub in hubs for e in hub.server_errors]
    assert not errors, "fakehub handler crashed:\n" + "\n".join(errors)


@pytest.fixture
def run(tmp_path, monkeypatch):
    """``run(*args, input=None)``: the hubvram CLI in-process, offline, with a fresh cache folder."""
    from click.testing import CliRunner

    from hubvram.cli import main

    monkeypatch.setenv("HUBVRAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def _run(*args, input=None):
        return CliRunner().invoke(main, list(args), catch_exceptions=False, input=input)
    return _run
