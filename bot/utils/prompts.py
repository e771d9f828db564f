"""What the bot does with a text a member sends to an operation before it becomes a job.

Every text field (prompt, negative prompt, remix prompt, region prompt) goes through `clean_prompt`, and
then `check_blocked`:

- `clean_prompt` drops the characters that draw nothing (controls, zero-width and bidirectional format
  characters, …; emoji keep the joiners and selectors they are made of), collapses whitespace and cuts at a
  word past the length limit. It returns '' when nothing drawable is left, so a prompt of `\\x01\\x02` or
  of U+202E alone is refused before anything is queued or charged.
- `check_blocked` raises `BlockedWord` naming the server's blocked word (as the admin wrote it) that the text
  contains, through case, accents, look-alike letters, leetspeak and the rest (`edalle.blocked_words`).

Pure functions, importable without the model code (no jax, no torch).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

import regex

from bot.errors import BlockedWord
from edalle.invisible import draws_something, strip_invisible
from edalle.jobs import find_blocked_word

_SPACES = re.compile(r'\s+')
_CLUSTER = regex.compile(r'\X')


def fold(text: str) -> str:
    """Lower case without accents: `Ça Va` → `ca va`. NFKD splits letters from their combining marks."""
    decomposed = unicodedata.normalize('NFKD', text)
    return ''.join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def clean_prompt(text: str, max_chars: int) -> tuple[str, bool]:
    """The text as it will be queued and whether it was cut; ('', False) when it holds nothing to draw.

    Cut past `max_chars` at a word boundary, and never inside a character as members see it (an emoji
    sequence, a letter with its accents).
    """
    prompt = _SPACES.sub(' ', strip_invisible(text)).strip()
    if not draws_something(prompt):
        return '', False
    if len(prompt) <= max_chars:
        return prompt, False
    cut, length = [], 0
    for cluster in _CLUSTER.findall(prompt):
        if length + len(cluster) > max_chars:
            break
        cut.append(cluster)
        length += len(cluster)
    kept = ''.join(cut)
    if ' ' in kept[max_chars // 2 :]:
        kept = kept[: kept.rindex(' ')]
    kept = kept.rstrip(' ,;:-')
    return (kept, True) if draws_something(kept) else ('', True)


def check_blocked(prompt: str, blocked_words: Iterable[str]) -> None:
    """Raise `BlockedWord` naming the first blocked word in `prompt`."""
    hit = find_blocked_word(prompt, blocked_words)
    if hit is not None:
        raise BlockedWord(hit)
