"""The components every job shares (✖ cancel, ℹ️ info, 🎞️ time-lapse), and `dispatch`, which every component's click and every
modal's submit goes through.

Every item is a restart-proof `DynamicItem`: it rebuilds itself from its `custom_id` (see `custom_ids`)
and hands the click to a cog method (`Jobs.on_info`, and each operation's own in its cog module:
`Imagine.on_pick`, `Expand.on_expand`, …), as RoboDanny's gatekeeper does: the item holds no state
beyond the id, and the cog loads the job from the store. If the cog is not loaded the member gets a
short ephemeral note instead of Discord's "This interaction failed".

A modal does the same from its `on_submit`: `await dispatch(interaction, 'Cog', 'on_thing', *values)`. Going
through `dispatch` is what puts a click or a submit past the guard (`bot.guard`: a banned member is refused
there, with the ban's reason, before any cog method runs), so no component or modal may call a cog directly.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from bot.errors import reply_to_interaction, report_interaction_error
from bot.guard import Guard
from bot.utils import custom_ids

log = logging.getLogger(__name__)


async def dispatch(interaction: discord.Interaction, cog_name: str, method: str, *args: Any) -> None:
    """Past the guard (bans), call `cog.method(interaction, *args)`; every refusal and error becomes a short
    ephemeral reply. For a component's `callback` and a modal's `on_submit` alike."""
    cog = interaction.client.get_cog(cog_name)  # type: ignore[attr-defined]
    guard: Guard | None = getattr(interaction.client, 'guard', None)
    try:
        if guard is not None:
            await guard.admit_interaction(interaction, cog=cog)
    except Exception as exc:  # a ban (its reason), or the store is down (an error id)
        await report_interaction_error(
            interaction, exc, context=f'{method} {args}: ban check for user {interaction.user.id}'
        )
        return
    if cog is None:
        await reply_to_interaction(interaction, 'That button does not work at the moment. Please try again later.')
        return
    try:
        await getattr(cog, method)(interaction, *args)
    except Exception as exc:  # every failure is answered; unexpected ones are logged with an id
        await report_interaction_error(interaction, exc, context=f'{method} {args} for user {interaction.user.id}')


class CancelButton(discord.ui.DynamicItem[discord.ui.Button], template=custom_ids.CANCEL.template):
    """Cancels a queued or running job; on a finished grid it closes the controls."""

    def __init__(self, job_id: int, *, row: int = 1) -> None:
        button = discord.ui.Button(emoji='✖️', style=discord.ButtonStyle.danger, custom_id=custom_ids.cancel(job_id), row=row)
        super().__init__(button)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> CancelButton:
        return cls(int(match['job_id']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Jobs', 'on_cancel_button', self.job_id)


class InfoButton(discord.ui.DynamicItem[discord.ui.Button], template=custom_ids.INFO.template):
    """A picture's facts (prompt, seed, score, knobs) and lineage, privately; anyone may look."""

    def __init__(self, job_id: int, index: int, *, row: int = 0) -> None:
        button = discord.ui.Button(
            emoji='ℹ️', style=discord.ButtonStyle.secondary, custom_id=custom_ids.info(job_id, index), row=row
        )
        super().__init__(button)
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> InfoButton:
        return cls(int(match['job_id']), int(match['index']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Jobs', 'on_info', self.job_id, self.index)


class TimelapseButton(discord.ui.DynamicItem[discord.ui.Button], template=custom_ids.TIMELAPSE.template):
    """🎞️ under a result whose optimisation was recorded: posts the time-lapse, under the channel's upload limit."""

    def __init__(self, job_id: int, *, row: int = 0) -> None:
        button = discord.ui.Button(
            label='Time-lapse',
            emoji='🎞️',
            style=discord.ButtonStyle.secondary,
            custom_id=custom_ids.timelapse(job_id),
            row=row,
        )
        super().__init__(button)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> TimelapseButton:
        return cls(int(match['job_id']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Jobs', 'on_timelapse', self.job_id)


DYNAMIC_ITEMS = (CancelButton, InfoButton, TimelapseButton)  # each operation's cog registers its own as it loads


def numbered_button(custom_id: str, index: int) -> discord.ui.Button[Any]:
    """Button `index + 1` of a grid's numbered row (1–5 on the first row, 6–9 on the second; the best stands out)."""
    return discord.ui.Button(
        label=str(index + 1),
        style=discord.ButtonStyle.primary if index == 0 else discord.ButtonStyle.secondary,
        custom_id=custom_id,
        row=0 if index < 5 else 1,
    )


def make_view(*items: discord.ui.Item[Any]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)  # never times out: the ids are the state
    for item in items:
        view.add_item(item)
    return view


def status_view(job_id: int) -> discord.ui.View:
    """Under a queued or running job's status message."""
    return make_view(CancelButton(job_id, row=0))
