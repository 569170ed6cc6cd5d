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


# -- end-to-end (Meltano) fixtures, shared by tests/test_e2e_*.py ------------------------


@pytest.fixture(scope="session")
def meltano_project(tmp_path_factory: pytest.TempPathFactory) -> t.Any:
    """One temporary Meltano project with the plugins installed, for every e2e module."""
    from e2e_support import make_meltano_project  # only e2e runs need it

    return make_meltano_project(tmp_path_factory.mktemp("meltano"))


@pytest.fixture(scope="session")
def expected() -> t.Any:
    """What a direct run of the tap emits against a private sandbox (read-only)."""
    from e2e_support import expected_sync

    return expected_sync()
