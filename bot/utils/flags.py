"""Flags in a text command: `.dream a castle at dusk --ar 16:9 --steps 50 --no text, watermark`.

A command declares the flags it knows (`Flag`: a name, how to read its value, a short description for the
error messages) and `parse_flags` splits what a member typed into those values and the remaining words (the
prompt). The rules, the same for every command:

- a flag is `--name` (or `—name` / `–name`: phones turn `--` into a dash), or `-n` for a one-letter name, its
  value the next word, or `--name=value`; flags and prompt words may come in any order (`.dream --ar 2:1 a wide bay` works);
- a `words` flag (`--no`) takes every word up to the next flag, so a negative prompt needs no quotes;
- a `switch` takes no value (`--fast`);
- an unknown flag is refused, naming it and the flags the command knows: it is never drawn as part of the
  prompt, and a typo (`--step 50`) is caught instead of silently ignored; so is a flag given twice, a missing
  value, and a value its reader refuses (the reader's words say what is wanted).

Pure Python, no Discord: reusable by any command (`.imagine --seed --temperature …`) and testable alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edalle.errors import EdalleError

_FLAG = re.compile(r'^(?:(?:--|—|–)(?P<name>[A-Za-z][A-Za-z0-9_-]*)|-(?P<short>[A-Za-z]))(?:=(?P<value>.*))?$')


class FlagError(EdalleError):
    """I could not read the options of that command."""


@dataclass(frozen=True)
class Flag:
    """One option of a text command. `read` turns the typed text into a value, or raises `ValueError` saying what is
    wanted ('a whole number from 1 to 200 (got 500).': the member reads "`--steps` takes …"), or an `EdalleError`
    whose sentence is shown after the flag's name."""

    name: str  # without dashes: 'ar'
    read: Callable[[str], Any] = str
    wants: str = 'a value'  # what its value is, when it is missing: '`--ar` needs a ratio, e.g. `--ar 16:9`'
    example: str = '…'  # a value to show in that message
    aliases: tuple[str, ...] = ()  # other names: ('ratio', 'aspect')
    words: bool = False  # takes the words up to the next flag (`--no blurry, text`)
    switch: bool = False  # takes no value: present is True

    @property
    def shown(self) -> str:
        return f'`--{self.name}`'


@dataclass(frozen=True)
class Parsed:
    """What a member typed: the words that are not flags (joined by single spaces) and each flag's value by name."""

    text: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


def parse_flags(text: str, flags: Sequence[Flag]) -> Parsed:
    """Split `text` into its words and the values of `flags` (see the module docstring); raises `FlagError`."""
    by_name: dict[str, Flag] = {}
    for flag in flags:
        for name in (flag.name, *flag.aliases):
            by_name[name.lower()] = flag
    words = (text or '').split()
    kept: list[str] = []
    values: dict[str, Any] = {}
    unknown: list[str] = []
    position = 0
    while position < len(words):
        word = words[position]
        position += 1
        match = _FLAG.match(word)
        if match is None:
            kept.append(word)
            continue
        typed = match['name'] or match['short']
        flag = by_name.get(typed.lower())
        if flag is None:
            unknown.append(f'`-{typed}`' if match['short'] else f'`--{typed}`')
            continue
        if flag.name in values:
            raise FlagError(f'{flag.shown} is given twice; keep one.')
        inline = match['value']
        if flag.switch:
            if inline is not None:
                raise FlagError(f'{flag.shown} takes no value.')
            values[flag.name] = True
            continue
        if flag.words:
            taken = [inline] if inline else []
            while position < len(words) and _FLAG.match(words[position]) is None:
                taken.append(words[position])
                position += 1
            raw = ' '.join(taken)
        elif inline is not None:
            raw = inline
        elif position < len(words) and _FLAG.match(words[position]) is None:
            raw = words[position]
            position += 1
        else:
            raw = ''
        if not raw.strip():
            raise FlagError(f'{flag.shown} needs {flag.wants}, e.g. `--{flag.name} {flag.example}`.')
        try:
            values[flag.name] = flag.read(raw)
        except EdalleError as exc:  # a sentence of its own (a ratio the expander refuses, …)
            raise FlagError(f'{flag.shown}: {exc}') from None
        except ValueError as exc:  # what is wanted: 'a whole number from 1 to 200 (got 500).'
            raise FlagError(f'{flag.shown} takes {exc}') from None
    if unknown:
        known = ', '.join(f'`--{flag.name}`' for flag in flags)
        names = ', '.join(dict.fromkeys(unknown))
        raise FlagError(f'I do not know {names}. This command takes {known}.')
    return Parsed(' '.join(kept), values)


# ---- readers ------------------------------------------------------------------------------------------------


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """A reader of whole numbers from `low` to `high`."""

    def read(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f'a whole number from {low} to {high} (got “{text}”).') from None
        if not low <= value <= high:
            raise ValueError(f'a whole number from {low} to {high} (got {value}).')
        return value

    return read


def number(low: float, high: float) -> Callable[[str], float]:
    """A reader of numbers (decimals allowed) from `low` to `high`."""

    def read(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f'a number from {low:g} to {high:g} (got “{text}”).') from None
        if not low <= value <= high:  # also refuses nan
            raise ValueError(f'a number from {low:g} to {high:g} (got {text.strip()}).')
        return value

    return read


def one_of(*choices: str) -> Callable[[str], str]:
    """A reader of one of `choices` (any case)."""

    def read(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f'one of {", ".join(choices)} (got “{text}”).')
        return value

    return read
