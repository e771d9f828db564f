"""Finding a server's blocked words in what a member writes, through the usual disguises.

Plain `re.search(r'\\bblood\\b', text.lower())` let through "bl<ZWSP>ood", "blооd" (Cyrillic о), "b.l.o.o.d",
"bl00d" and "bloods", and worse, the prompt normaliser (`edalle.text.normalize_text`) then turned several
of them back into "blood": the filter passed a word the model read. So a text is searched in two forms:

- what a reader sees, `skeleton(text)`: every character that draws nothing removed (`edalle.invisible`),
  compatibility-folded and stripped of accents (NFKD: fullwidth, mathematical and circled letters, ligatures,
  "é"), look-alike letters of other scripts replaced by the Latin letters they look like (Unicode's
  confusables table, TR39, as the `confusable_homoglyphs` package ships it), then case-folded;
- what the model reads, `normalize_text(text)` (unidecode transliteration, HTML entities, emoji as their
  names: 🩸 is read as "drop of blood").

In both, a blocked word matches as a whole word, and also:

- with a few look-alike digits and signs (`LEET`: "bl00d", "8lood", "$ex"), but never a run of digits alone
  ("800" is not "boo");
- with its letters one by one, split by up to three non-letters ("b l o o d", "b.l.o.o.d", "b-l-0-0-d"),
  for words of three letters or more; single letters around such a run may be part of it;
- with a plural "s" or "es" ("bloods", "bloodes");
- `blood*`, as an admin writes it, matches every word that starts with "blood" ("bloodhound", "bloody").

Never inside a longer word ("Scunthorpe", "bloodhound" without the `*`), and not a word broken unevenly
("bl ood", "bl-ood"), spelled backwards, or written in another language: no filter catches everything.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from confusable_homoglyphs import confusables

from edalle.invisible import strip_all_invisible

#: Digits and signs that stand for a letter in leetspeak; chosen for what reads as the letter at a glance.
LEET: dict[str, str] = {
    'a': '4@',
    'b': '8',
    'e': '3',
    'g': '9',
    'i': '1!|l',  # a capital I, a lower-case l, a 1 and a | are one vertical stroke in many fonts
    'l': '1!|i',
    'o': '0',
    's': '5$',
    't': '7+',
}
_WORD_CHAR = r'[^\W_]'  # a letter or a digit, in any script
_SEPARATOR = r'[\W_]{1,3}'  # between the letters of a spelled-out word
_SPELLED_MIN = 3  # shorter words spelled out letter by letter ("a s") are everyday text
_LETTER = re.compile(r'[^\W\d_]')
_ASCII_WORD = re.compile(r'[A-Za-z0-9]+')


def skeleton(text: str) -> str:
    """`text` as a reader sees it, in plain lower-case Latin where it looks Latin: "Ｂl𝐨оd" → "blood"."""
    decomposed = unicodedata.normalize('NFKD', strip_all_invisible(text))
    bare = ''.join(char for char in decomposed if unicodedata.category(char) not in ('Mn', 'Me'))
    return ''.join(_latin_lookalike(char) for char in bare).casefold()


@lru_cache(maxsize=65_536)
def _latin_lookalike(char: str) -> str:
    """The ASCII letters or digits a non-ASCII character is confusable with (TR39), else the character.

    A letter's other case is tried next, so that case still does not matter: Cyrillic "В" looks like "B"
    but "в" like no ASCII letter, and "кровь" must match "КРОВЬ" as "blood" matches "BLOOD". ASCII itself is
    left alone: TR39 also maps "1", "I" and "0" to "l", "l" and "O", which would make "BIG" read "blg";
    look-alike digits are `LEET`'s business, where a blocked word asks for them.
    """
    if char.isascii():
        return char
    for form in dict.fromkeys((char, char.upper(), char.lower())):
        found = confusables.is_confusable(form, preferred_aliases=[]) if len(form) == 1 else False
        for homoglyph in found[0]['homoglyphs'] if found else ():
            if _ASCII_WORD.fullmatch(homoglyph['c']):
                return homoglyph['c']
    return char


def _letter_class(char: str) -> str:
    """A pattern for one letter of a blocked word: the letter or what stands for it."""
    stand_ins = LEET.get(char, '')
    return f'[{re.escape(char + stand_ins)}]' if stand_ins else re.escape(char)


@dataclass(frozen=True)
class _Blocked:
    """One blocked word, compiled: its pattern, and for each of its letters the characters that may write it
    (a text lacking one of them cannot match: most words are ruled out without running the pattern)."""

    pattern: re.Pattern[str]
    needs: tuple[frozenset[str], ...]
    has_letters: bool

    def found_in(self, text: str, chars: set[str]) -> bool:
        """A match, with a letter if the word has one: leetspeak must not turn numbers ("800") into words."""
        if not all(need & chars for need in self.needs):
            return False
        matches = self.pattern.finditer(text)
        return any(_LETTER.search(match[0]) for match in matches) if self.has_letters else any(matches)


@lru_cache(maxsize=4096)
def _compiled(word: str) -> _Blocked | None:
    """One blocked word as an admin wrote it (`blood`, `blood*`, `blood bath`, `c++`); None if it is empty."""
    prefix = word.endswith('*')
    parts = skeleton(word.rstrip('*')).split()
    if not parts:
        return None
    needs = tuple(frozenset(char + LEET.get(char, '')) for part in parts for char in part)
    written = [''.join(_letter_class(char) for char in part) for part in parts]
    body = r'[\W_]+'.join(written)  # a phrase: its words apart by anything that is not a letter
    if len(parts) == 1 and len(parts[0]) >= _SPELLED_MIN and _ASCII_WORD.fullmatch(parts[0]):
        spelled = _SEPARATOR.join(_letter_class(char) for char in parts[0])
        body = f'(?:{body}|{spelled})'
    if not prefix:
        body += '(?:e?s)?'
    start = f'(?<!{_WORD_CHAR})' if re.match(_WORD_CHAR, parts[0][0]) else ''
    end = f'(?!{_WORD_CHAR})' if re.match(_WORD_CHAR, parts[-1][-1]) and not prefix else ''
    return _Blocked(re.compile(start + body + end), needs, _LETTER.search(''.join(parts)) is not None)


def _model_reads(text: str) -> str:
    """The text as the model will read it. Imported here: `edalle.text` loads `tokenizers` (never jax or torch),
    which a bot with no blocked words need not pay for."""
    from edalle.text import normalize_text

    return normalize_text(text)


def find_blocked_word(text: str, blocked_words: Iterable[str]) -> str | None:
    """The first of `blocked_words` (as given) that `text` contains, in what a reader sees or what the model
    reads, or None."""
    compiled = [(word, _compiled(word)) for word in blocked_words]
    checks = [(word, blocked) for word, blocked in compiled if blocked is not None]
    if not checks:
        return None
    seen, read = skeleton(text), _model_reads(text)
    seen_chars, read_chars = set(seen), set(read)
    for word, blocked in checks:
        if blocked.found_in(seen, seen_chars) or blocked.found_in(read, read_chars):
            return word
    return None
