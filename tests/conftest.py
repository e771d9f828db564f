"""Shared pytest fixtures: the fake Discord's (see `tests/discord_fake/fixtures.py`)."""

from __future__ import annotations

from discord_fake.fixtures import discord_errors, fake_discord_server, fake_discord_urls  # noqa: F401
