"""The shared tables of hostile input say what they claim, so tests built on them test what they name."""

from __future__ import annotations

import re

from odd_input import IDS_IN_RANGE, IDS_OUT_OF_RANGE, NO_SUCH_JOB_CUSTOM_IDS

import bot.cogs.expand  # noqa: F401 - declares its custom_id actions
import bot.cogs.imagine  # noqa: F401 - declares its custom_id actions
from bot.utils.custom_ids import ACTIONS
from edalle.jobs.ids import ID_MAX, ID_MIN, fits


def test_the_ids_are_on_both_sides_of_the_store_range():
    assert all(fits(value) for value in IDS_IN_RANGE) and not any(fits(value) for value in IDS_OUT_OF_RANGE)
    assert (ID_MIN, ID_MAX) == (-(2**63), 2**63 - 1)
    assert not fits(None) and not fits(1.0) and not fits('1')


def test_each_hostile_custom_id_reaches_a_handler():
    """discord.py fires the DynamicItem whose template fullmatches: each of these gets to a handler and a store verb."""
    for custom_id in NO_SUCH_JOB_CUSTOM_IDS:
        matched = [word for word, action in ACTIONS.items() if re.fullmatch(action.template, custom_id)]
        assert len(matched) == 1, custom_id
