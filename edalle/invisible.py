"""Characters that draw nothing, and taking them out of what members write without breaking emoji.

A prompt of `\\x01\\x02\\x07`, or of bidirectional overrides (U+202E …), looks empty yet is not, so it was
queued and charged; a zero-width space or soft hyphen inside a word hides it from a word filter. What draws
nothing: controls (Cc; whitespace aside, which callers collapse), format characters (Cf: zero-width space and
joiners, soft hyphen, bidi overrides and isolates, tags), surrogates (Cs: not text) and Unicode's other
default-ignorable code points (variation selectors, Hangul fillers, the combining grapheme joiner).

Emoji are built from some of them: 👩‍💻 is 👩 ZWJ 💻, ❤️ is ❤ VS16, 🏴󠁧󠁢󠁳󠁣󠁴󠁿 is 🏴 + tag letters + CANCEL TAG, 1️⃣ is 1 VS16
U+20E3. So text is cut into grapheme clusters (Unicode's "user-perceived characters", the `regex` module's
`\\X`), and inside a cluster that is an emoji only those pieces stay: a ZWJ followed by a pictograph,
VS15/VS16, and tag characters inside a 🏴 tag sequence. Everywhere else every such character goes.

The `regex` module, not `re`, because `re` knows neither grapheme clusters nor these Unicode properties.
"""

from __future__ import annotations

import regex

ZWJ = '\u200d'
_VARIATION_SELECTORS = frozenset('\ufe0e\ufe0f')  # text / emoji presentation
_BLACK_FLAG, _CANCEL_TAG = '\U0001f3f4', '\U000e007f'
_KEYCAP = '\u20e3'

_INVISIBLE = regex.compile(r'(?!\s)[\p{Cc}\p{Cf}\p{Cs}\p{Default_Ignorable_Code_Point}]')
_CLUSTER = regex.compile(r'\X')
_PICTOGRAPH = regex.compile(r'\p{Extended_Pictographic}')
_TAG = regex.compile(r'[\U000e0020-\U000e007f]')
#: What can be drawn: letters, digits, symbols (emoji among them, and pictographs newer than this Python's
#: Unicode tables). Not punctuation alone ("...", "?!") and not U+2800 BRAILLE PATTERN BLANK, which is a
#: symbol by category but a well-known way to post an empty-looking message.
_DRAWABLE = regex.compile(r'[\p{L}\p{N}\p{S}\p{Extended_Pictographic}--\u2800]', flags=regex.VERSION1)


def strip_invisible(text: str) -> str:
    """`text` without the characters that draw nothing, except those an emoji is made of. Whitespace stays."""
    if not _INVISIBLE.search(text):
        return text  # the common case: nothing to take out
    return ''.join(_clean_cluster(cluster) for cluster in _CLUSTER.findall(text))


def strip_all_invisible(text: str) -> str:
    """`text` without any of them, emoji's included: for matching words, where 👩‍💻 need not survive."""
    return _INVISIBLE.sub('', text)


def draws_something(text: str) -> bool:
    """Whether `text` holds a letter, digit, symbol or emoji: something a picture could be made of."""
    return _DRAWABLE.search(text) is not None


def _clean_cluster(cluster: str) -> str:
    if not _INVISIBLE.search(cluster):
        return cluster
    if not (_PICTOGRAPH.search(cluster) or _KEYCAP in cluster):
        return _INVISIBLE.sub('', cluster)
    tag_sequence = cluster.startswith(_BLACK_FLAG) and cluster.endswith(_CANCEL_TAG)
    kept = []
    for i, char in enumerate(cluster):
        if not _INVISIBLE.match(char):
            kept.append(char)
        elif char == ZWJ and _PICTOGRAPH.match(cluster, i + 1):  # 👩 ZWJ 💻; a ZWJ before nothing joins nothing
            kept.append(char)
        elif char in _VARIATION_SELECTORS or (tag_sequence and _TAG.match(char)):
            kept.append(char)
    return ''.join(kept)
