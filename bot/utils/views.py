"""The bot's components: restart-proof `DynamicItem`s, and the views each kind of message carries.

Every item rebuilds itself from its `custom_id` (see `custom_ids`) and hands the click to a cog
method (`Imagine.on_pick`, `Expand.on_expand`, …), as RoboDanny's gatekeeper does: the item holds no
state beyond the id, and the cog loads the job from the store. If the cog is not loaded the member
gets a short ephemeral note instead of Discord's "This interaction failed".
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from bot.errors import reply_to_interaction, report_interaction_error
from bot.utils import custom_ids
from bot.utils.ratios import OTHER_RATIOS, TALL, WIDE

log = logging.getLogger(__name__)

GRID_SIZE = 9  # candidates with a button (a 3×3 grid)
NUMBER_EMOJI = ('1️⃣', '2️⃣', '3️⃣', '4️⃣', '5️⃣', '6️⃣', '7️⃣', '8️⃣', '9️⃣')
WIDE_EMOJI = '↔️'
TALL_EMOJI = '↕️'


async def _dispatch(interaction: discord.Interaction, cog_name: str, method: str, *args: Any) -> None:
    """Call `cog.method(interaction, *args)`; every error becomes a short ephemeral reply."""
    cog = interaction.client.get_cog(cog_name)  # type: ignore[attr-defined]
    if cog is None:
        await reply_to_interaction(interaction, 'That button does not work at the moment. Please try again later.')
        return
    try:
        await getattr(cog, method)(interaction, *args)
    except Exception as exc:  # every failure is answered; unexpected ones are logged with an id
        await report_interaction_error(interaction, exc, context=f'{method} {args} for user {interaction.user.id}')


class PickButton(discord.ui.DynamicItem[discord.ui.Button], template=custom_ids.PICK):
    """Candidate `index + 1` under a grid."""

    def __init__(self, job_id: int, index: int) -> None:
        button = discord.ui.Button(
            label=str(index + 1),
            style=discord.ButtonStyle.primary if index == 0 else discord.ButtonStyle.secondary,
            custom_id=custom_ids.pick(job_id, index),
            row=0 if index < 5 else 1,
        )
        super().__init__(button)
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> PickButton:
        return cls(int(match['job_id']), int(match['index']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await _dispatch(interaction, 'Imagine', 'on_pick', self.job_id, self.index)


class RerollButton(discord.ui.DynamicItem[discord.ui.Button], template=custom_ids.REROLL):
    def __init__(self, job_id: int) -> None:
        button = discord.ui.Button(
            emoji='🔄', style=discord.ButtonStyle.secondary, custom_id=custom_ids.reroll(job_id), row=1
        )
        super().__init__(button)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RerollButton:
        return cls(int(match['job_id']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await _dispatch(interaction, 'Imagine', 'on_reroll', self.job_id)


class CancelButton(discord.ui.DynamicItem[discord.ui.Button], template=custom_ids.CANCEL):
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
        await _dispatch(interaction, 'Jobs', 'on_cancel_button', self.job_id)


class ExpandButton(discord.ui.DynamicItem[discord.ui.Button], template=custom_ids.EXPAND):
    """Widen candidate `index` of imagine job `job_id` to width:height."""

    def __init__(self, job_id: int, index: int, width: int, height: int) -> None:
        emoji = WIDE_EMOJI if width > height else TALL_EMOJI
        button = discord.ui.Button(
            label=f'{width}:{height}',
            emoji=emoji,
            style=discord.ButtonStyle.primary,
            custom_id=custom_ids.expand(job_id, index, width, height),
            row=0,
        )
        super().__init__(button)
        self.job_id, self.index, self.ratio = job_id, index, (width, height)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ExpandButton:
        return cls(int(match['job_id']), int(match['index']), int(match['width']), int(match['height']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await _dispatch(interaction, 'Expand', 'on_expand', self.job_id, self.index, f'{self.ratio[0]}:{self.ratio[1]}')


class RatioSelect(discord.ui.DynamicItem[discord.ui.Select], template=custom_ids.RATIOS):
    """The other ratios under a picked candidate; choosing one starts the expand."""

    def __init__(self, job_id: int, index: int) -> None:
        select = discord.ui.Select(
            custom_id=custom_ids.ratios(job_id, index),
            placeholder='Expand to another ratio…',
            options=[
                discord.SelectOption(label=f'{w}:{h}', value=f'{w}:{h}', description=description)
                for w, h, description in OTHER_RATIOS
            ],
            row=1,
        )
        super().__init__(select)
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RatioSelect:
        return cls(int(match['job_id']), int(match['index']))

    async def callback(self, interaction: discord.Interaction) -> None:
        ratio = self.item.values[0] if self.item.values else f'{WIDE[0]}:{WIDE[1]}'
        await _dispatch(interaction, 'Expand', 'on_expand', self.job_id, self.index, ratio)


class InfoButton(discord.ui.DynamicItem[discord.ui.Button], template=custom_ids.INFO):
    """Prompt, seed, CLIP score and job id, privately; anyone may look."""

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
        await _dispatch(interaction, 'Expand', 'on_info', self.job_id, self.index)


DYNAMIC_ITEMS = (PickButton, RerollButton, CancelButton, ExpandButton, RatioSelect, InfoButton)


def _view(*items: discord.ui.Item[Any]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)  # never times out: the ids are the state
    for item in items:
        view.add_item(item)
    return view


def status_view(job_id: int) -> discord.ui.View:
    """Under a queued or running job's status message."""
    return _view(CancelButton(job_id, row=0))


def grid_view(job_id: int, candidate_count: int) -> discord.ui.View:
    """Under an imagine result: 1–5 / 6–9 🔄 / ✖ (Discord allows five buttons a row)."""
    picks = [PickButton(job_id, index) for index in range(min(candidate_count, GRID_SIZE))]
    return _view(*picks, RerollButton(job_id), CancelButton(job_id, row=2))


def candidate_view(job_id: int, index: int) -> discord.ui.View:
    """Under a picked candidate: ↔️ 16:9, ↕️ 9:16, ℹ️, and the select of other ratios."""
    return _view(
        ExpandButton(job_id, index, *WIDE),
        ExpandButton(job_id, index, *TALL),
        InfoButton(job_id, index),
        RatioSelect(job_id, index),
    )


def expanded_view(job_id: int) -> discord.ui.View:
    """Under a widened picture."""
    return _view(InfoButton(job_id, 0))
