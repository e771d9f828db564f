"""DALL·E mini's prompt cleaning and BART byte-level BPE tokenisation, offline.

DalleBart was trained on captions passed through dalle-mini's `TextNormalizer` and then
BART's byte-level BPE, so a prompt only reads the way the model expects if it goes through
the same two steps. This module redoes both without `transformers` and without network:

- `normalize_text` follows `dalle_mini.model.text.TextNormalizer` rule by rule, in the same
  order (the order matters: several rules protect text from the ones after them).
- `TextTokenizer` loads the published `vocab.json` + `merges.txt` into a `tokenizers` BPE
  model set up like `BartTokenizerFast`, and pads/truncates like
  `tokenizer(text, padding='max_length', truncation=True, max_length=64)`.
- `write_tiny_tokenizer` makes a small real BPE vocabulary for the `tiny` preset.

Known differences from the reference normaliser (both documented where they happen):

- hashtags are split into words only when `enwiki-words-frequency.txt` is given; the
  reference always downloads it. Without it a hashtag just loses its '#'.
- `<person>` (a CC12M caption placeholder) becomes 'a person' unless an `rng` is passed;
  the reference draws 'a person' / 'someone' / 'somebody' from the global `random`, which
  would make one prompt tokenise differently from run to run.
"""

from __future__ import annotations

import html
import json
import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import emoji
import ftfy
from unidecode import unidecode

from edalle.config import TEXT_TOKEN_COUNT

if TYPE_CHECKING:  # numpy and tokenizers load with the tokenizer: the bot normalises prompts (blocked words) without them
    import numpy as np
    from tokenizers import Tokenizer

# BART's special tokens and their ids (`BartConfig`: bos 0, pad 1, eos 2).
BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN, MASK_TOKEN = '<s>', '<pad>', '</s>', '<unk>', '<mask>'
BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

VOCAB_FILENAME = 'vocab.json'
MERGES_FILENAME = 'merges.txt'
# Published next to the dalle-mini weights (hub repo `dalle-mini/dalle-mini`); only hashtags use it.
WORD_FREQUENCIES_FILENAME = 'enwiki-words-frequency.txt'


class PromptError(ValueError):
    """A prompt the model cannot draw; `str(error)` is short enough to show a user as is."""


# ---------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------

# How often each phrase stands for a person on Wikipedia: the reference's sampling weights.
_PERSON_PHRASES = ('a person', 'someone', 'somebody')
_PERSON_WEIGHTS = (282265, 121194, 12219)
_PERSON = '<person>'
_PEOPLE = re.compile(r'<person>(?:[,\s]*(?:and)*[,\s]*<person>)+')

_WIKI_REF_AT_START = re.compile(r'\A\s*\[\d+\]')
_WIKI_REF_AT_END = re.compile(r'\[\d+\]\s*\Z')
_HTML_TAG = re.compile(r'<[^<]+?>')
_URL = re.compile(r'http\S+')
_THOUSANDS_COMMA = re.compile(r'(\d),(\d{3})')

# Some characters must survive the "punctuation becomes commas" rule in a few places:
# decimal/abbreviation dots, the apostrophe of English contractions and slashes in dates.
# They are swapped for a word-like marker first and swapped back afterwards. The marker is
# the reference's own ('xtokx…'): being made of word characters, it takes part in the
# rules in between (hyphen joining, repeated letters, hashtags) exactly as it does there.
_MARK = 'xtokx'
_DOT_MARK, _QUOTE_MARK, _SLASH_MARK = f'{_MARK}dot{_MARK}', f'{_MARK}quote{_MARK}', f'{_MARK}slash{_MARK}'
_DOT_IN_WORD = re.compile(r'(\w)\.(\w)')
_CONTRACTION_QUOTE = re.compile(r"'(?=(?:[stdm]|ll|re|ve)\b)")  # 's 't 'd 'm 'll 're 've
_DATE_SLASH = re.compile(r'(\d)/(\d)')

_HYPHEN_IN_WORD = re.compile(r'(\w)-(\w)')
_SPACED_SYMBOL = re.compile(r'([%&/$*])')
_HASHTAG = re.compile(r'#(\w+)')
_IGNORED = re.compile(r'[_#\\]')
_QUOTE = re.compile(r"""['"`]""")
_PUNCTUATION = re.compile(r'[()\[\].,|:;?!=+~\-/{}]')
_REPEATED = re.compile(r'(\D)\1{3,}')  # 4+ times, not 3: roman numerals such as 'viii'
_QUOTE_RUN = re.compile(r'(?:\s*"+\s*)+')
_COMMA_RUN = re.compile(r'(?:\s*,+\s*)+')
_SPACES = re.compile(r'\s+')


def normalize_text(text: str, *, word_frequencies: Path | None = None, rng: random.Random | None = None) -> str:
    """Clean a prompt the way dalle-mini cleaned its training captions.

    The result is lower-case ASCII, with punctuation reduced to commas and quotes, and it
    always starts with a space (BPE then sees the first word as a word, not a word piece).
    `word_frequencies` is a local `enwiki-words-frequency.txt`; with it, '#sunsetbeach'
    becomes 'sunset beach', without it 'sunsetbeach'. `rng` makes `<person>` placeholders
    random like the reference; without it they are always 'a person'.
    """
    t = ftfy.fix_text(text)
    t = html.unescape(html.unescape(t))  # scraped captions are often escaped twice ('&amp;amp;')
    t = emoji.demojize(t)  # before unidecode, which would drop emoji: '🐱' -> ':cat_face:'
    t = unidecode(t).lower()
    t = _replace_person_tokens(t, rng)  # before the HTML rule, which would eat '<person>'
    t = _WIKI_REF_AT_END.sub('', _WIKI_REF_AT_START.sub('', t))
    t = _HTML_TAG.sub(' ', t)
    t = _URL.sub('', t)
    # '1,000,000' -> '1000000': two passes because a match consumes the next group's digit.
    t = _THOUSANDS_COMMA.sub(r'\1\2', _THOUSANDS_COMMA.sub(r'\1\2', t))
    t = _DOT_IN_WORD.sub(rf'\1{_DOT_MARK}\2', t)
    t = _CONTRACTION_QUOTE.sub(_QUOTE_MARK, t)
    t = _DATE_SLASH.sub(rf'\1{_SLASH_MARK}\2', t)
    t = _HYPHEN_IN_WORD.sub(r'\1 \2', t)  # 'black-and-white' -> 'black and white'
    t = _SPACED_SYMBOL.sub(r' \1 ', t)
    splitter = _word_splitter(str(word_frequencies)) if word_frequencies is not None else None
    t = _HASHTAG.sub(lambda m: splitter.split(m.group(1)) if splitter else m.group(1), t)
    t = _IGNORED.sub(' ', t)
    t = _QUOTE.sub(' " ', t)
    t = _PUNCTUATION.sub(',', t)
    t = t.replace(_DOT_MARK, '.').replace(_QUOTE_MARK, "'").replace(_SLASH_MARK, '/')
    t = _REPEATED.sub(r'\1', t)  # 'soooo' -> 'so', ',,,,' -> ','
    t = _QUOTE_RUN.sub(' " ', t)
    t = _COMMA_RUN.sub(', ', t)
    t = _SPACES.sub(' ', t).strip()
    t = t.removesuffix(',').removeprefix(',').strip()  # one comma each side, like the reference
    return f' {t}'


def _replace_person_tokens(t: str, rng: random.Random | None) -> str:
    """CC12M captions name people '<PERSON>'; the model learnt plain words instead."""
    t = _PEOPLE.sub(' people ', t)
    while _PERSON in t:
        phrase = rng.choices(_PERSON_PHRASES, weights=_PERSON_WEIGHTS)[0] if rng else _PERSON_PHRASES[0]
        t = t.replace(_PERSON, f' {phrase} ', 1)
    return t


class WordSplitter:
    """Splits run-together words ('sunsetbeach') by word frequency, for hashtags.

    The wordninja idea as dalle-mini uses it: a word of frequency rank r costs log(r + 1),
    an unknown string costs infinity, and dynamic programming finds the cheapest split. Ties
    go to the shorter last piece, so an unknown run falls apart into single characters;
    digits are glued back together, as is a trailing "'s".
    """

    _CHUNK_SEPARATOR = re.compile(r"[^a-zA-Z0-9']+")

    def __init__(self, words_by_frequency: Iterable[str]) -> None:
        # A word listed twice keeps its later (costlier) rank, as a dict built in order does.
        self._cost = {word: math.log(rank + 1) for rank, word in enumerate(words_by_frequency)}
        self._longest = max(map(len, self._cost), default=1)

    @classmethod
    def from_file(cls, path: Path) -> WordSplitter:
        """Read `enwiki-words-frequency.txt`: one 'word count' line per word, most frequent first."""
        lines = Path(path).read_text(encoding='utf8').splitlines()
        return cls(line.split()[0] for line in lines if line.strip())

    def split(self, text: str) -> str:
        return ' '.join(word for chunk in self._CHUNK_SEPARATOR.split(text) for word in self._split_chunk(chunk))

    def _split_chunk(self, s: str) -> list[str]:
        # cheapest[i]: cost of the best split of s[:i]; last_len[i]: length of its last word.
        cheapest, last_len = [0.0], [0]
        for end in range(1, len(s) + 1):
            cost, length = min(
                (cheapest[start] + self._cost.get(s[start:end].lower(), math.inf), end - start)
                for start in range(max(0, end - self._longest), end)
            )
            cheapest.append(cost)
            last_len.append(length)
        words: list[str] = []  # collected from the end of s backwards
        end = len(s)
        while end > 0:
            piece = s[end - last_len[end] : end]
            glue = piece != "'" and words and (words[-1] == "'s" or (piece[-1].isdigit() and words[-1][0].isdigit()))
            if glue:
                words[-1] = piece + words[-1]
            else:
                words.append(piece)
            end -= last_len[end]
        return words[::-1]


@lru_cache(maxsize=2)
def _word_splitter(path: str) -> WordSplitter:
    """The frequency file is a few MB; read it once per process, not once per prompt."""
    return WordSplitter.from_file(Path(path))


# ---------------------------------------------------------------------------------------
# Tokenisation
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EncodedText:
    """One text as DalleBart's encoder takes it: fixed length, `<s> … </s>` then `<pad>`.

    `eq=False` because arrays do not compare to one bool; compare `ids` with numpy.
    """

    ids: np.ndarray  # int32, (max_length,)
    attention_mask: np.ndarray  # int32, (max_length,), 1 for <s>, the tokens and </s>
    token_count: int  # before truncation, <s> and </s> included
    truncated: bool  # True when token_count > max_length: the end of the text was dropped


@dataclass(frozen=True, eq=False)
class PromptTokens:
    """A prompt ready for generation, with the empty prompt super-conditioning subtracts."""

    prompt: str  # as the user typed it
    normalized: str  # after normalisation: what the model actually reads
    encoded: EncodedText
    unconditional: EncodedText  # the tokenised empty string, as `DalleBartProcessor` builds it


class TextTokenizer:
    """BART's byte-level BPE, configured like `BartTokenizerFast`, with DalleBart's padding."""

    def __init__(self, tokenizer: Tokenizer, *, word_frequencies: Path | None = None) -> None:
        self._tokenizer = tokenizer
        self.word_frequencies = word_frequencies
        self._unconditional: dict[int, EncodedText] = {}
        expected = {BOS_TOKEN: BOS_ID, PAD_TOKEN: PAD_ID, EOS_TOKEN: EOS_ID}
        found = {token: tokenizer.token_to_id(token) for token in expected}
        if found != expected:
            raise ValueError(f'not a BART vocabulary: special token ids are {found}, expected {expected}')

    @classmethod
    def from_files(
        cls, vocab_path: str | Path, merges_path: str | Path, *, word_frequencies: Path | None = None
    ) -> TextTokenizer:
        """Load a published `vocab.json` + `merges.txt` pair."""
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        # No unk token: every byte has its own symbol, so BPE never needs one (BART's neither).
        tokenizer = Tokenizer(models.BPE.from_file(str(vocab_path), str(merges_path)))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        # BartTokenizerFast registers these, so '</s>' typed in a raw text is the special id,
        # not its characters; '<mask>' also takes the space before it.
        specials = [AddedToken(t, special=True) for t in (BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)]
        specials.append(AddedToken(MASK_TOKEN, lstrip=True, special=True))
        tokenizer.add_special_tokens([t for t in specials if tokenizer.token_to_id(t.content) is not None])
        return cls(tokenizer, word_frequencies=word_frequencies)

    @classmethod
    def from_dir(cls, directory: str | Path, *, word_frequencies: Path | None = None) -> TextTokenizer:
        """Load `vocab.json` + `merges.txt` from a model folder.

        A `enwiki-words-frequency.txt` lying in the same folder turns on hashtag splitting
        unless `word_frequencies` names another file.
        """
        directory = Path(directory)
        if word_frequencies is None and (directory / WORD_FREQUENCIES_FILENAME).is_file():
            word_frequencies = directory / WORD_FREQUENCIES_FILENAME
        return cls.from_files(directory / VOCAB_FILENAME, directory / MERGES_FILENAME, word_frequencies=word_frequencies)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def tokens(self, text: str) -> list[str]:
        """The BPE pieces of `text` without specials ('Ġ' marks a leading space); for debugging."""
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str, max_length: int = TEXT_TOKEN_COUNT) -> EncodedText:
        """Tokenise `text` as is (no normalisation) to exactly `max_length` ids.

        Too long a text keeps its first `max_length - 2` tokens and still ends in `</s>`,
        which is what `truncation=True` does for a single text.
        """
        import numpy as np

        if max_length < 2:
            raise ValueError(f'max_length must leave room for <s> and </s>, got {max_length}')
        pieces = self._tokenizer.encode(text, add_special_tokens=False).ids
        kept = pieces[: max_length - 2]
        ids = np.full((max_length,), PAD_ID, dtype=np.int32)
        ids[0] = BOS_ID
        ids[1 : 1 + len(kept)] = kept
        ids[1 + len(kept)] = EOS_ID
        attention_mask = (np.arange(max_length) < len(kept) + 2).astype(np.int32)
        ids.setflags(write=False)
        attention_mask.setflags(write=False)
        token_count = len(pieces) + 2
        return EncodedText(ids, attention_mask, token_count=token_count, truncated=token_count > max_length)

    def encode_prompt(
        self, prompt: str, max_length: int = TEXT_TOKEN_COUNT, *, rng: random.Random | None = None
    ) -> PromptTokens:
        """Normalise and tokenise a user's prompt; raise `PromptError` if nothing drawable is left."""
        if not prompt or not prompt.strip():
            raise PromptError('The prompt is empty; use some words.')
        text = normalize_text(prompt, word_frequencies=self.word_frequencies, rng=rng)
        if not any(c.isalnum() for c in text):
            raise PromptError('The prompt is empty after cleaning; use some words.')
        return PromptTokens(prompt, text, self.encode(text, max_length), self.unconditional(max_length))

    def unconditional(self, max_length: int = TEXT_TOKEN_COUNT) -> EncodedText:
        """The empty prompt: `<s> </s> <pad>…`. Like dalle-mini, '' is tokenised without normalising."""
        if max_length not in self._unconditional:
            self._unconditional[max_length] = self.encode('', max_length)
        return self._unconditional[max_length]

    def decode(self, ids: Sequence[int] | np.ndarray, *, skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


# ---------------------------------------------------------------------------------------
# The tiny vocabulary
# ---------------------------------------------------------------------------------------

# Prompt-like English, already in normalised form, to learn the tiny preset's merges from.
_TINY_CORPUS = """\
an astronaut riding a horse on the moon, digital art
a painting of a fox sitting in a field at sunrise in the style of claude monet
a photo of a cat wearing a tiny hat, studio lighting
the eiffel tower landing on the moon
a watercolor painting of a lighthouse by the sea at night
a bowl of soup that looks like a monster, knitted out of wool
an armchair in the shape of an avocado
a red sports car parked in front of a modern house
a castle on a hill surrounded by a dark forest, oil painting
a robot playing chess with an old man in a park
a dog and a cat sleeping together on a sofa
sunset over the mountains with a lake in the foreground
a city skyline at night with neon lights and rain
a bear eating honey in the woods, children's book illustration
a small boat sailing on a calm blue ocean
a portrait of a woman with flowers in her hair
pixel art of a dragon flying over a village
a snowy street in a quiet town during winter
a cup of coffee on a wooden table next to a book
a group of people walking on the beach at sunset
a green frog sitting on a leaf after the rain
an old map of a treasure island, drawn with ink
a teddy bear working on new research underwater
a futuristic train crossing a bridge over a river
a plate of pancakes with strawberries and cream
a black and white photo of a busy market street
a cute penguin wearing a scarf in the snow
a medieval knight holding a sword in front of a dragon
a garden full of colorful flowers and butterflies
a pencil sketch of an owl sitting on a branch
the statue of liberty made of chocolate
a spaceship flying through the stars, concept art
a bicycle leaning against a brick wall in paris
a tree house in a giant tree, fantasy landscape
a close up photo of a bee on a sunflower
a still life of fruit in a basket, renaissance painting
a waterfall in a tropical jungle, 4k photo
a child flying a kite in a windy field
a cozy living room with a fireplace and a sleeping dog
two horses running across a field in the morning
"""


def write_tiny_tokenizer(directory: Path, vocab_size: int = 512) -> None:
    """Write a small, real BART-style BPE `vocab.json` + `merges.txt` into `directory`.

    For the `tiny` preset: a random-weight model still needs a working tokenizer, and
    downloading BART's 50k vocabulary for it would defeat an offline preset. Layout as in
    BART: `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, the 256 byte symbols, learnt merges,
    `<mask>` last (id `vocab_size - 1`). The files are the same on every run.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    smallest = 4 + len(byte_alphabet) + 1
    if vocab_size < smallest:
        raise ValueError(f'vocab_size must be at least {smallest} (specials and the byte alphabet), got {vocab_size}')
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # the last id is <mask>'s
        min_frequency=0,
        special_tokens=[BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN],
        initial_alphabet=byte_alphabet,
        show_progress=False,
    )
    # A leading space on each line, as normalize_text gives every prompt.
    tokenizer.train_from_iterator((f' {line}' for line in _TINY_CORPUS.splitlines()), trainer=trainer)
    model = json.loads(tokenizer.to_str())['model']
    vocab: dict[str, int] = dict(model['vocab'])
    merges = [m.split(' ') if isinstance(m, str) else m for m in model['merges']]
    if len(vocab) != vocab_size - 1:
        raise RuntimeError(f'the built-in corpus gave {len(vocab)} symbols, {vocab_size - 1} wanted: add text to it')
    vocab[MASK_TOKEN] = vocab_size - 1

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    by_id = dict(sorted(vocab.items(), key=lambda item: item[1]))
    (directory / VOCAB_FILENAME).write_text(json.dumps(by_id, ensure_ascii=False) + '\n', encoding='utf8')
    merges_text = '#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges)
    (directory / MERGES_FILENAME).write_text(merges_text, encoding='utf8')
