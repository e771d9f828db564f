"""The text-flag reader every command can use (`bot.utils.flags`): flags anywhere among the words, `--no` taking words
up to the next flag, values read and checked, and unknown or repeated flags refused by name (never drawn)."""

from __future__ import annotations

import pytest

from bot.cogs.dream import FLAGS as DREAM_FLAGS
from bot.utils.flags import Flag, FlagError, number, one_of, parse_flags, whole_number

FLAGS = (
    Flag('seed', whole_number(0, 100), 'a seed', example='42'),
    Flag('temperature', number(0.1, 3.0), 'a temperature', aliases=('temp',)),
    Flag('no', words=True, wants='the words to keep out'),
    Flag('init', one_of('random', 'grey')),
    Flag('fast', switch=True),
)


def test_flags_come_anywhere_and_the_rest_is_the_prompt() -> None:
    parsed = parse_flags('a castle --seed 7 on a hill   --temp=0.5 --fast at dusk', FLAGS)
    assert parsed.text == 'a castle on a hill at dusk'
    assert dict(parsed.values) == {'seed': 7, 'temperature': 0.5, 'fast': True}
    assert parse_flags('just words, -5 and - dashes', FLAGS).text == 'just words, -5 and - dashes'
    assert parse_flags('', FLAGS) == parse_flags('   ', FLAGS) and parse_flags('', FLAGS).text == ''


def test_no_takes_the_words_up_to_the_next_flag_and_phones_dashes_count() -> None:
    parsed = parse_flags('a bay —no text, watermark, people --init GREY at noon', FLAGS)
    assert parsed.get('no') == 'text, watermark, people' and parsed.get('init') == 'grey'
    assert parsed.text == 'a bay at noon'
    assert parse_flags('a bay –seed 3', FLAGS).get('seed') == 3  # an en dash, too
    assert parse_flags('a bay --no=blur noise', FLAGS).get('no') == 'blur noise'


@pytest.mark.parametrize(
    ('text', 'words'),
    [
        ('a bay --steps 50', 'I do not know `--steps`. This command takes `--seed`, `--temperature`, `--no`'),
        ('a bay --stepz 5 --colour red --stepz 6', 'I do not know `--stepz`, `--colour`.'),
        ('a bay --seed', '`--seed` needs a seed, e.g. `--seed 42`.'),
        ('a bay --seed --fast', '`--seed` needs a seed'),
        ('a bay --no --seed 3', '`--no` needs the words to keep out'),
        ('a bay --seed 500', '`--seed` takes a whole number from 0 to 100 (got 500).'),
        ('a bay --seed seven', '`--seed` takes a whole number from 0 to 100 (got “seven”).'),
        ('a bay --temp nan', '`--temperature` takes a number from 0.1 to 3 (got nan).'),
        ('a bay --init blue', '`--init` takes one of random, grey (got “blue”).'),
        ('a bay --seed 1 --seed 2', '`--seed` is given twice; keep one.'),
        ('a bay --fast=yes', '`--fast` takes no value.'),
    ],
)
def test_mistakes_are_refused_naming_the_flag_and_what_it_wants(text: str, words: str) -> None:
    with pytest.raises(FlagError) as caught:
        parse_flags(text, FLAGS)
    assert words in str(caught.value)


def test_the_dream_flags() -> None:
    parsed = parse_flags('a lighthouse --ar 16:9 --steps 50 --seed 7 --no text, watermark --init noise', DREAM_FLAGS)
    assert parsed.text == 'a lighthouse'
    assert dict(parsed.values) == {'ar': '16:9', 'steps': 50, 'seed': 7, 'no': 'text, watermark', 'init': 'noise'}
    assert parse_flags('a bay --ratio 2:1', DREAM_FLAGS).get('ar') == '2:1'
    with pytest.raises(FlagError, match=r'`--ar`: 4:1 is out of range: a dream can be from 1:3'):
        parse_flags('a bay --ar 4:1', DREAM_FLAGS)
    with pytest.raises(FlagError, match='`--init` takes one of random, grey, noise'):
        parse_flags('a bay --init refine', DREAM_FLAGS)
