"""Fixtures for the webhooks plugin's tests: a real HTTP receiver on loopback."""

from __future__ import annotations

from typing import Any, Iterable

import pytest

from .receiver import Receiver


@pytest.fixture
def receiver(io_loop: Any) -> Iterable[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()
