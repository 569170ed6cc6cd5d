"""Shared fixtures: a sandbox per test session (and fresh ones where a test mutates data)."""

from __future__ import annotations

import typing as t

import pytest

from tap_analytics.sandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox() -> t.Iterator[Sandbox]:
    """All three services with default data. Do not mutate its data: use `fresh_sandbox`."""
    with Sandbox(seed=7) as sb:
        yield sb


@pytest.fixture
def fresh_sandbox() -> t.Callable[..., Sandbox]:
    """Factory for a private sandbox (e.g. `fresh_sandbox(services=['alation'])`)."""
    started: list[Sandbox] = []

    def make(**kwargs: t.Any) -> Sandbox:
        sb = Sandbox(**kwargs).start()
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.stop()
