"""What the bot checks in a prompt before it becomes a job: length and blocked words.

Blocked words are matched as whole words, ignoring case *and* accents (“café” blocks “CAFE” and
“cafe”): both the prompt and the words are folded the same way before `find_blocked_word` looks
for them, and the member is told which word (as the admin wrote it) was the problem.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from bot.errors import BlockedWord
from edalle.jobs import find_blocked_word

_SPACES = re.compile(r'\s+')


def fold(text: str) -> str:
    """Lower case without accents: `Ça Va` → `ca va`. NFKD splits letters from their combining marks."""
    decomposed = unicodedata.normalize('NFKD', text)
    return ''.join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def clean_prompt(text: str, max_chars: int) -> tuple[str, bool]:
    """Collapse whitespace and cut at a word boundary past `max_chars`; returns (prompt, was_cut)."""
    prompt = _SPACES.sub(' ', text).strip()
    if len(prompt) <= max_chars:
        return prompt, False
    cut = prompt[:max_chars]
    if ' ' in cut[max_chars // 2 :]:
        cut = cut[: cut.rindex(' ')]
    return cut.rstrip(' ,;:-'), True


def check_blocked(prompt: str, blocked_words: Iterable[str]) -> None:
    """Raise `BlockedWord` naming the first blocked word in `prompt`."""
    words = list(blocked_words)
    folded = {fold(word): word for word in words}
    hit = find_blocked_word(fold(prompt), folded)
    if hit is not None:
        raise BlockedWord(folded[hit])
