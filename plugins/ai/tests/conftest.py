"""Fixtures for the AI plugin's tests: a real OpenAI-compatible server on loopback."""

from __future__ import annotations

from typing import Any, Iterable

import pytest

from .fake_openai import FakeOpenAI


@pytest.fixture
def fake_openai(io_loop: Any) -> Iterable[FakeOpenAI]:
    """A started ``FakeOpenAI`` (``.base_url`` ends in ``/v1``); stopped after the test."""
    server = FakeOpenAI().start()
    yield server
    io_loop.run_sync(server.stop)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ai(**settings): [plugins.ai] settings added for the openai flow tests")
