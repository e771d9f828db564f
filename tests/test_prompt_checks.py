"""The text every operation takes from a member: cleaned (`clean_prompt`) and checked for blocked words
(`find_blocked_word` / `check_blocked`), as tables of what members send (`odd_input`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from odd_input import BLOOD_ALLOWED, BLOOD_EVASIONS, EMPTY_PROMPTS, KEPT_PROMPTS

from bot.errors import BlockedWord
from bot.utils.prompts import check_blocked, clean_prompt
from edalle import errors
from edalle.blocked_words import skeleton
from edalle.jobs.limits import find_blocked_word, validate_setting
from edalle.text import normalize_text

REPO = Path(__file__).resolve().parents[1]


# ---- nothing to draw ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('text', EMPTY_PROMPTS.values(), ids=EMPTY_PROMPTS.keys())
def test_a_text_with_nothing_to_draw_is_cleaned_to_nothing(text):
    assert clean_prompt(text, 200) == ('', False)


@pytest.mark.parametrize(('text', 'queued'), KEPT_PROMPTS.values(), ids=KEPT_PROMPTS.keys())
def test_what_a_text_keeps_emoji_sequences_included(text, queued):
    assert clean_prompt(text, 200) == (queued, False)


def test_a_long_text_is_cut_at_a_word_and_never_inside_an_emoji_sequence():
    family = '👨\u200d👩\u200d👧'  # 5 code points, one picture
    prompt, cut = clean_prompt('a' * 8 + family + 'b' * 10, 10)
    assert cut and prompt == 'a' * 8  # the sequence did not fit whole: it is left out, not split
    prompt, cut = clean_prompt('word ' * 100, 50)
    assert cut and len(prompt) <= 50 and prompt.endswith('word')
    assert clean_prompt('... ' * 20 + 'cat', 10) == ('', True)  # what is left after the cut draws nothing


# ---- blocked words -----------------------------------------------------------------------------------------


@pytest.mark.parametrize('text', BLOOD_EVASIONS.values(), ids=BLOOD_EVASIONS.keys())
def test_each_evasion_of_a_blocked_word_is_caught(text):
    assert find_blocked_word(text, ['blood']) == 'blood'
    with pytest.raises(BlockedWord, match='“blood”'):
        check_blocked(text, ['gore', 'blood'])


@pytest.mark.parametrize('text', BLOOD_ALLOWED.values(), ids=BLOOD_ALLOWED.keys())
def test_ordinary_words_near_a_blocked_word_pass(text):
    assert find_blocked_word(text, ['blood']) is None
    check_blocked(text, ['blood'])


def test_the_evasions_the_prompt_normaliser_turned_back_into_the_word_are_caught():
    """The model reads `normalize_text(prompt)`: what it reads as "blood" must never pass."""
    read_as_blood = [text for text in BLOOD_EVASIONS.values() if 'blood' in normalize_text(text).split()]
    assert len(read_as_blood) >= 8  # zero-width joiner, soft hyphen, Cyrillic, Greek, HTML entity, …
    assert all(find_blocked_word(text, ['blood']) for text in read_as_blood)


@pytest.mark.parametrize(
    ('text', 'words', 'found'),
    [
        ('a bloodhound', ['blood*'], 'blood*'),
        ('bloody', ['blood*'], 'blood*'),
        ('b l o o d h o u n d', ['blood*'], 'blood*'),
        ('lifeblood', ['blood*'], None),  # a prefix, not a suffix
        ('Scunthorpe', ['cunt'], None),
        ('an allegory', ['gory'], None),
        ('a classic glass', ['ass'], None),
        ('Sussex downs', ['sex'], None),
        ('$ex', ['sex'], 'sex'),
        ('800', ['boo'], None),  # digits alone are never a word
        ('b00', ['boo'], 'boo'),
        ('a blood bath', ['blood bath'], 'blood bath'),
        ('a blood-bath', ['blood bath'], 'blood bath'),
        ('a bloodbath', ['blood bath'], None),
        ('c++ code', ['c++'], 'c++'),
        ('a CAFE at night', ['café'], 'café'),
        ('lots of Göre!', ['gore'], 'gore'),
        ('КРОВЬ', ['кровь'], 'кровь'),  # blocked words in other scripts match too
        ('a 🩸 moon', ['🩸'], '🩸'),
        ('x🩸x', ['🩸'], '🩸'),  # a symbol has no word boundaries to respect
        ('anything', [], None),
        ('anything', ['', '*'], None),  # empty entries block nothing
    ],
)
def test_matching_rules(text, words, found):
    assert find_blocked_word(text, words) == found


def test_skeleton_is_what_a_reader_sees():
    assert skeleton('Ｂl𝐨\u200bоD') == 'blood'
    assert skeleton('BIG 1 0') == 'big 1 0'  # ASCII is left as typed: look-alike digits are a blocked word's business


def test_blocked_words_are_stored_clean_and_a_star_only_ends_one():
    assert validate_setting('blocked_words', ['Blood*', ' bl\u200bood ', '', '\u202e']) == ['blood', 'blood*']
    for bad in ('*blood', 'bl*od', 'blood**', '*'):
        with pytest.raises(errors.InvalidSetting, match='may only end'):
            validate_setting('blocked_words', [bad])


def test_the_checks_import_no_model_code():
    code = textwrap.dedent(
        """
        import sys
        from bot.utils.prompts import check_blocked, clean_prompt
        assert clean_prompt('\\u202e', 200) == ('', False)
        try:
            check_blocked('a bl\\u200bood moon', ['blood'])
        except Exception as error:
            print(type(error).__name__)
        print([m for m in ('jax', 'torch', 'flax', 'open_clip', 'edalle.engine', 'edalle.worker') if m in sys.modules])
        """
    )
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split('\n')[:2] == ['BlockedWord', '[]']
