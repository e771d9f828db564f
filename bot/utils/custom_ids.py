"""The grammar of every component `custom_id` the bot sends: `ed:<action>:<field>:<field>…`.

A custom id is the only state a button carries: its action, the job id, and (for most) a picture index.
Handlers parse it and load the job from the store, so a button on a week-old message works after any
number of restarts (nothing is kept in memory). Each operation's cog declares its own actions
(`Action('spin', JOB, INDEX, owner=__name__)`); this module keeps them in one table and refuses an
action word that two modules declare, because discord.py runs `fullmatch` of *every* registered
`DynamicItem` template against a clicked id and fires all that match. The longest possible id must fit
Discord's 100 characters.

`index` is the picture's 0-based index in its job's result (members see it + 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = 'ed'
MAX_LENGTH = 100  # Discord's limit for a custom_id
JOB = r'(?P<job_id>[0-9]{1,19})'
INDEX = r'(?P<index>[0-9]{1,2})'
RATIO = r'(?P<width>[0-9]{1,2})x(?P<height>[0-9]{1,2})'

#: every action word → its `Action`, in the order they were declared
ACTIONS: dict[str, Action] = {}


@dataclass(frozen=True)
class Action:
    """One kind of component: `Action('widen', JOB, INDEX, RATIO, owner=__name__)` matches `ed:widen:12:0:16x9`.

    `owner` is the declaring module: discord.py executes an extension's module again each time it loads
    it, so the same module may declare its actions again; another module may not take the word.
    """

    word: str
    fields: tuple[str, ...]
    owner: str

    def __init__(self, word: str, *fields: str, owner: str) -> None:
        declared = ACTIONS.get(word)
        if declared is not None and declared.owner != owner:
            raise ValueError(f'the custom_id action {word!r} is declared by {declared.owner} and by {owner}')
        object.__setattr__(self, 'word', word)
        object.__setattr__(self, 'fields', fields)
        object.__setattr__(self, 'owner', owner)
        ACTIONS[word] = self

    @property
    def template(self) -> str:
        return ':'.join((PREFIX, self.word, *self.fields))

    def id(self, *values: object) -> str:
        custom_id = ':'.join(str(v) for v in (PREFIX, self.word, *values))
        if len(custom_id) > MAX_LENGTH:  # cannot happen with ids below 10**19, but a silent 400 would be worse
            raise ValueError(f'custom_id too long: {custom_id!r}')
        if re.fullmatch(self.template, custom_id) is None:
            raise ValueError(f'{custom_id!r} does not match {self.word!r}: {self.template}')
        return custom_id

    def match(self, custom_id: str) -> re.Match[str] | None:
        return re.fullmatch(self.template, custom_id)


#: cancel a queued or running job (on a finished grid: close the controls)
CANCEL = Action('cancel', JOB, owner=__name__)
#: a picture's facts and lineage, privately; every picture posted alone carries it
INFO = Action('info', JOB, INDEX, owner=__name__)
#: post the time-lapse of a job's optimisation (under results that have one)
TIMELAPSE = Action('timelapse', JOB, owner=__name__)


def cancel(job_id: int) -> str:
    return CANCEL.id(job_id)


def info(job_id: int, index: int) -> str:
    return INFO.id(job_id, index)


def timelapse(job_id: int) -> str:
    return TIMELAPSE.id(job_id)


def parse(custom_id: str) -> tuple[str, re.Match[str]] | None:
    """The action and match of the one template `custom_id` matches, or None (not ours)."""
    for word, action in ACTIONS.items():
        match = action.match(custom_id)
        if match is not None:
            return word, match
    return None


def picture_target(custom_ids: list[str]) -> tuple[int, int] | None:
    """The (job id, picture index) of a picture the bot posted alone, read from its ℹ️ button; None otherwise.

    Reactions carry no custom id; reading the message's own components finds the job behind it, so
    reactions need no table of message ids either and keep working after restarts.
    """
    for custom_id in custom_ids:
        match = INFO.match(custom_id)
        if match is not None:
            return int(match['job_id']), int(match['index'])
    return None


def first_match(action: Action, custom_ids: list[str]) -> re.Match[str] | None:
    """The first of a message's components that is `action`'s, parsed."""
    return next((m for m in map(action.match, custom_ids) if m is not None), None)
