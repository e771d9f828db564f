"""The grammar of every component `custom_id` the bot sends, in one place.

A custom id is the only state a button carries: `ed:<action>:<job id>:<index>[:<ratio>]`. Handlers parse
it and load the job from the store, so a button on a week-old message works after any number of
restarts (nothing is kept in memory). discord.py runs `fullmatch` of *every* registered `DynamicItem`
template against a clicked id and fires all that match, so each action word appears in exactly one
template; `tests/test_bot_custom_ids.py` checks that no id matches two templates and that the longest
possible id fits Discord's 100 characters.

`index` is the candidate's 0-based index in the imagine result (members see it + 1).
"""

from __future__ import annotations

import re

PREFIX = 'ed'
MAX_LENGTH = 100  # Discord's limit for a custom_id
_JOB = r'(?P<job_id>[0-9]{1,19})'
_INDEX = r'(?P<index>[0-9]{1,2})'
_RATIO = r'(?P<width>[0-9]{1,2})x(?P<height>[0-9]{1,2})'

#: a candidate button under a grid: post candidate `index` of imagine job `job_id`
PICK = rf'{PREFIX}:pick:{_JOB}:{_INDEX}'
#: a new imagine job with the same prompt and a new seed
REROLL = rf'{PREFIX}:reroll:{_JOB}'
#: cancel a queued or running job
CANCEL = rf'{PREFIX}:cancel:{_JOB}'
#: a ratio button under a picked candidate: expand it
EXPAND = rf'{PREFIX}:expand:{_JOB}:{_INDEX}:{_RATIO}'
#: the select of other ratios under a picked candidate (the chosen value is `WxH`)
RATIOS = rf'{PREFIX}:ratios:{_JOB}:{_INDEX}'
#: prompt, seed, CLIP score and job id of a candidate (or of an expand result, index 0)
INFO = rf'{PREFIX}:info:{_JOB}:{_INDEX}'

TEMPLATES: dict[str, str] = {
    'pick': PICK,
    'reroll': REROLL,
    'cancel': CANCEL,
    'expand': EXPAND,
    'ratios': RATIOS,
    'info': INFO,
}


def _checked(custom_id: str) -> str:
    if len(custom_id) > MAX_LENGTH:  # cannot happen with ids below 10**19, but a silent 400 would be worse
        raise ValueError(f'custom_id too long: {custom_id!r}')
    return custom_id


def pick(job_id: int, index: int) -> str:
    return _checked(f'{PREFIX}:pick:{job_id}:{index}')


def reroll(job_id: int) -> str:
    return _checked(f'{PREFIX}:reroll:{job_id}')


def cancel(job_id: int) -> str:
    return _checked(f'{PREFIX}:cancel:{job_id}')


def expand(job_id: int, index: int, width: int, height: int) -> str:
    return _checked(f'{PREFIX}:expand:{job_id}:{index}:{width}x{height}')


def ratios(job_id: int, index: int) -> str:
    return _checked(f'{PREFIX}:ratios:{job_id}:{index}')


def info(job_id: int, index: int) -> str:
    return _checked(f'{PREFIX}:info:{job_id}:{index}')


def parse(custom_id: str) -> tuple[str, re.Match[str]] | None:
    """The action and match of the one template `custom_id` matches, or None (not ours)."""
    for action, template in TEMPLATES.items():
        match = re.fullmatch(template, custom_id)
        if match is not None:
            return action, match
    return None


def message_target(custom_ids: list[str]) -> tuple[str, int, int | None] | None:
    """What a bot message is, read from the components the bot put on it: `('grid', job id, None)` for an
    imagine grid, `('candidate', job id, index)` for a picked candidate, or None.

    Reactions carry no custom id; reading the message's own components finds the job behind it, so
    reactions need no table of message ids either and keep working after restarts.
    """
    parsed = [p for p in map(parse, custom_ids) if p is not None]
    for action, match in parsed:
        if action == 'pick':
            return 'grid', int(match['job_id']), None
    for action, match in parsed:
        if action in ('expand', 'ratios'):
            return 'candidate', int(match['job_id']), int(match['index'])
    return None
