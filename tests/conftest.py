"""Shared pytest fixtures: the fake Discord's (see `tests/discord_fake/fixtures.py`), plus two for the bot's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from discord_fake.fixtures import discord_errors, fail_on_discord_errors, fake_discord_server, fake_discord_urls  # noqa: F401


@pytest.fixture
def bot_errors() -> Iterator[object]:
    """Fail the test if the bot's own loggers (`bot.*`) recorded an ERROR: unexpected failures are logged there."""
    with fail_on_discord_errors('bot') as collector:
        yield collector


@pytest.fixture(scope='session')
def bot_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir for every bot end-to-end test: the tiny weights and JAX's compile cache are made once."""
    return tmp_path_factory.mktemp('edalle-bot-data')


@pytest.fixture(autouse=True)
def torch_grad_mode_on() -> Iterator[None]:
    """min-dalle (a test oracle) turns torch's gradients off for the whole process when it is imported;
    later tests that backpropagate (CLIP, the VQGAN, the expander) must not depend on test order."""
    import sys

    torch = sys.modules.get('torch')
    if torch is not None:
        torch.set_grad_enabled(True)
    yield


@pytest.fixture(scope='session')
def tiny_engine(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The engine on the tiny preset, loaded once for the tests of the operations that run on it (vary, repaint)."""
    from edalle.engine import Engine

    return Engine.load('tiny', tmp_path_factory.mktemp('tiny-engine'))
