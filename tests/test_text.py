"""Prompt normalisation and BPE tokenisation (edalle.text).

The expected normalisations were worked out by hand from dalle-mini's
`src/dalle_mini/model/text.py` (`TextNormalizer`, the version with emoji support), rule by
rule; each case names the rule it pins down. The tokenizer is checked against independent
implementations: `tokenizers`' own `ByteLevelBPETokenizer` with its padding/truncation
machinery, min-dalle's pure-Python BPE, and hand-computed merges on a hand-made vocabulary.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import ByteLevelBPETokenizer, pre_tokenizers, processors

from edalle.text import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    WORD_FREQUENCIES_FILENAME,
    PromptError,
    TextTokenizer,
    WordSplitter,
    normalize_text,
    write_tiny_tokenizer,
)

# ---------------------------------------------------------------------------------------
# normalize_text
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('raw', 'expected'),
    [
        # lower-casing and the leading space
        ('A Cat', ' a cat'),
        ('', ' '),
        # unidecode: accents and other scripts become ASCII
        ('Café crème brûlée', ' cafe creme brulee'),
        ('Ärger über Straße', ' arger uber strasse'),
        # ftfy repairs mojibake before anything else
        ('CafÃ© au lait', ' cafe au lait'),
        # html entities, unescaped up to three levels deep (ftfy once, then twice more)
        ('Tom &amp; Jerry', ' tom & jerry'),
        ('Fish &amp;amp; chips', ' fish & chips'),
        ('caf&eacute;', ' cafe'),
        # emoji become their names; '_' and ':' then become spaces and commas
        ('I ❤️ cats 🐱', ' i, red heart, cats, cat face'),
        # URLs are dropped
        ('a cat https://example.com/cat.png sitting', ' a cat sitting'),
        ('see http://x.y/z?q=1', ' see'),
        # html tags become a space
        ('a <b>bold</b> cat', ' a bold cat'),
        ('line<br/>break', ' line break'),
        # wiki references only at the very start or end
        ('[1] The Eiffel Tower[23]', ' the eiffel tower'),
        ('paris[2] at night', ' paris, 2, at night'),
        # thousands separators go, decimal points stay, other dots become commas
        ('1,000 stars', ' 1000 stars'),
        ('1,000,000,000 stars', ' 1000000000 stars'),
        ('pi is 3.14', ' pi is 3.14'),
        ('a cat. a dog.', ' a cat, a dog'),
        ('u.s. army', ' u.s, army'),  # the reference's non-overlapping dot rule
        # slashes stay in dates, other slashes become commas
        ('on 12/25/2020', ' on 12/25/2020'),
        ('and/or', ' and, or'),
        # quotes: contractions keep the apostrophe, every other quote becomes a spaced '"'
        ('it\'s a "big" dog', ' it\'s a " big " dog'),
        ("don't we'll they're i'd i'm we've", " don't we'll they're i'd i'm we've"),
        ("'hello'", ' " hello "'),
        ("rock 'n' roll", ' rock " n " roll'),
        ("'sup", ' " sup'),
        ('`tick` ""double""', ' " tick " double "'),
        # hyphens join words as a space, a loose hyphen is punctuation
        ('a black-and-white photo', ' a black and white photo'),
        ('well - known', ' well, known'),
        # punctuation becomes commas, and runs of commas one ', '
        ('Hello!!! World???', ' hello, world'),
        ('cats; dogs: (birds) {fish} [1,2] a|b a=b a+b a~b', ' cats, dogs, birds, fish, 1, 2, a, b a, b a, b a, b'),
        ('!!!', ' '),
        # some symbols are always spaced
        ('100% $5 a*b r&b', ' 100 % $ 5 a * b r & b'),
        # '_', '#' and backslash are ignored
        ('snake_case a\\b', ' snake case a b'),
        # 4+ repeats of a non-digit collapse, 3 do not (roman numerals), digits never
        ('soooooo cute', ' so cute'),
        ('henry viii', ' henry viii'),
        ('10000 dots....', ' 10000 dots'),
        # whitespace of any kind collapses
        ('  multiple   spaces\tand\nnewlines ', ' multiple spaces and newlines'),
        # CC12M person placeholders
        ('<PERSON> and <PERSON> on a beach', ' people on a beach'),
        ('<person>, <person> and <person>', ' people'),
        ('<PERSON> smiling', ' a person smiling'),
        # hashtags lose '#' (no word-frequency file given, so no splitting)
        ('#sunset at the #beach', ' sunset at the beach'),
        ('a#b', ' ab'),
        ('#snake_case', ' snake case'),
    ],
)
def test_normalize_text_follows_the_reference_rules(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_normalize_text_is_idempotent_on_clean_text() -> None:
    once = normalize_text('An astronaut, riding a horse on the moon! 4K, trending on ArtStation')
    assert once == ' an astronaut, riding a horse on the moon, 4k, trending on artstation'
    assert normalize_text(once) == once


def test_person_placeholder_is_sampled_only_with_an_rng() -> None:
    drawn = {normalize_text('<person> smiling', rng=random.Random(seed)) for seed in range(60)}
    assert drawn <= {' a person smiling', ' someone smiling', ' somebody smiling'}
    assert len(drawn) >= 2
    # the same seed gives the same text
    assert normalize_text('<person>', rng=random.Random(3)) == normalize_text('<person>', rng=random.Random(3))


@pytest.fixture
def word_frequencies(tmp_path: Path) -> Path:
    words = ['the', 'beach', 'sunset', 'sun', 'set', 'at', 'top', 'cat', "cat's", 'best', 'big']
    path = tmp_path / WORD_FREQUENCIES_FILENAME
    path.write_text(''.join(f'{word} {1000 - i}\n' for i, word in enumerate(words)), encoding='utf8')
    return path


@pytest.mark.parametrize(
    ('raw', 'expected'),
    [
        # 'sunset' (rank 2) + 'beach' (rank 1) is cheaper than 'sun' + 'set' + 'beach'
        ('#sunsetbeach at sea', ' sunset beach at sea'),
        ('#SunsetBeach', ' sunset beach'),
        # digits are glued back together
        ('#top10cats', ' top 10 c a t s'),
        # an unknown run falls apart into letters (the reference does the same)
        ('#qzx', ' q z x'),
        # '_' separates chunks before splitting
        ('#big_cat', ' big cat'),
        ('no tags here', ' no tags here'),
    ],
)
def test_hashtags_are_split_with_a_word_frequency_file(word_frequencies: Path, raw: str, expected: str) -> None:
    assert normalize_text(raw, word_frequencies=word_frequencies) == expected


def test_word_splitter_costs() -> None:
    splitter = WordSplitter(['a', 'cat', 'cats', 'sat', "cat's", 'hat'])
    assert splitter.split('catsat') == 'cat sat'
    assert splitter.split('acatshat') == 'a cats hat'
    assert splitter.split("acat'shat") == "a cat's hat"
    assert splitter.split('cat2022') == 'cat 2022'
    # after an unknown piece every split costs infinity and ties go to single characters:
    # the reference's quirk, kept so that hashtags read as they did in training
    assert splitter.split('cat2022hat') == 'cat 2022 h a t'
    assert splitter.split('') == ''
    # costs are log(rank + 1), so they multiply: 'ab' at rank 4 (log 5) beats 'a' + 'b' at
    # ranks 1 and 2 (log 2 + log 3 = log 6), where rank sums would pick the two short words
    assert WordSplitter(['x', 'a', 'b', 'y', 'ab']).split('ab') == 'ab'
    assert WordSplitter(['x', 'a', 'b', 'y', 'z', 'w', 'ab']).split('ab') == 'a b'


# ---------------------------------------------------------------------------------------
# The tiny vocabulary
# ---------------------------------------------------------------------------------------


def _digest(directory: Path) -> str:
    return hashlib.sha256((directory / 'vocab.json').read_bytes() + (directory / 'merges.txt').read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp('tiny-tokenizer')
    write_tiny_tokenizer(directory)
    return directory


@pytest.fixture(scope='module')
def tiny(tiny_dir: Path) -> TextTokenizer:
    return TextTokenizer.from_dir(tiny_dir)


def test_tiny_tokenizer_is_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    write_tiny_tokenizer(tmp_path / 'again')
    assert _digest(tmp_path / 'again') == _digest(tiny_dir)
    # tokenizers' trainer hashes with per-process random seeds: check another process too
    script = (
        'import sys; from pathlib import Path; from edalle.text import write_tiny_tokenizer\n'
        'd = Path(sys.argv[1]); write_tiny_tokenizer(d)\n'
    )
    subprocess.run([sys.executable, '-c', script, str(tmp_path / 'other')], check=True, timeout=60)
    assert _digest(tmp_path / 'other') == _digest(tiny_dir)


def test_tiny_vocabulary_layout(tiny_dir: Path, tiny: TextTokenizer) -> None:
    vocab = json.loads((tiny_dir / 'vocab.json').read_text(encoding='utf8'))
    merges = (tiny_dir / 'merges.txt').read_text(encoding='utf8').splitlines()
    assert merges[0].startswith('#version')
    assert [vocab[t] for t in ('<s>', '<pad>', '</s>', '<unk>')] == [0, 1, 2, 3]
    assert vocab['<mask>'] == 511
    assert sorted(vocab.values()) == list(range(512))  # unique, dense, all < 512
    assert set(pre_tokenizers.ByteLevel.alphabet()) <= set(vocab)
    assert len(merges) - 1 == 512 - 4 - 256 - 1
    for line in merges[1:]:  # every merge builds a token the vocabulary holds
        a, b = line.split(' ')
        assert a in vocab and b in vocab and a + b in vocab
    assert tiny.vocab_size == 512


def test_tiny_vocabulary_other_sizes(tmp_path: Path) -> None:
    write_tiny_tokenizer(tmp_path, vocab_size=300)
    vocab = json.loads((tmp_path / 'vocab.json').read_text(encoding='utf8'))
    assert sorted(vocab.values()) == list(range(300)) and vocab['<mask>'] == 299
    with pytest.raises(ValueError, match='at least 261'):
        write_tiny_tokenizer(tmp_path / 'too-small', vocab_size=260)


def test_tiny_tokenizer_is_lossless_and_in_range(tiny: TextTokenizer) -> None:
    for text in (' an astronaut riding a horse', ' café 🐱 ✨ 東京', ' "quoted", 3.14!'):
        encoded = tiny.encode(text)
        real = encoded.ids[encoded.attention_mask == 1]
        assert real.max() < 512 and UNK_ID not in real
        assert tiny.decode(real) == text  # byte-level BPE loses nothing
    # the corpus taught it common words whole
    assert tiny.tokens(' a horse on the moon') == ['Ġa', 'Ġhorse', 'Ġon', 'Ġthe', 'Ġmoon']


# ---------------------------------------------------------------------------------------
# TextTokenizer.encode against independent implementations
# ---------------------------------------------------------------------------------------

ORACLE_TEXTS = [
    '',
    ' a cat',
    ' an astronaut riding a horse on the moon, digital art',
    'no leading space',
    ' Mixed CASE, punctuation!? and   spaces\tand\nnewlines',
    " it's 3.14 % of $5 -- #tag @user",
    ' café 🐱 東京',
    ' a cat' * 80,  # 161 tokens: truncated
    ' ' + 'x' * 500,
]


@pytest.mark.parametrize('max_length', [64, 8, 2])
def test_encode_matches_tokenizers_bytelevel_bpe(tiny_dir: Path, tiny: TextTokenizer, max_length: int) -> None:
    oracle = ByteLevelBPETokenizer(str(tiny_dir / 'vocab.json'), str(tiny_dir / 'merges.txt'))
    oracle.post_processor = processors.RobertaProcessing(('</s>', EOS_ID), ('<s>', BOS_ID))
    oracle.enable_truncation(max_length)
    oracle.enable_padding(pad_id=PAD_ID, pad_token='<pad>', length=max_length)
    for text in ORACLE_TEXTS:
        expected = oracle.encode(text)
        got = tiny.encode(text, max_length)
        assert got.ids.tolist() == expected.ids, text
        assert got.attention_mask.tolist() == expected.attention_mask, text
        assert got.truncated == bool(expected.overflowing), text


def _load_min_dalle_tokenizer() -> type:
    """min-dalle's pure-Python BPE, loaded without its package (which imports torch)."""
    spec = importlib.util.find_spec('min_dalle')
    if spec is None or not spec.submodule_search_locations:
        pytest.skip('min-dalle is not installed (pip install -e .[test])')
    path = Path(next(iter(spec.submodule_search_locations))) / 'text_tokenizer.py'
    module_spec = importlib.util.spec_from_file_location('_min_dalle_text_tokenizer', path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.TextTokenizer


def test_encode_matches_min_dalle_bpe(tiny_dir: Path, tiny: TextTokenizer) -> None:
    MinDalleTokenizer = _load_min_dalle_tokenizer()
    vocab = json.loads((tiny_dir / 'vocab.json').read_text(encoding='utf8'))
    merges = (tiny_dir / 'merges.txt').read_text(encoding='utf8').splitlines()[1:]
    oracle = MinDalleTokenizer(vocab, merges)
    # min-dalle splits on spaces only, so compare on normalised word-only prompts
    for prompt in ('an astronaut riding a horse on the moon', 'Quizzical zebras juggling kumquats', 'a cozy cabin'):
        text = normalize_text(prompt)
        expected = oracle.tokenize(text)
        got = tiny.encode(text)
        assert got.ids[: len(expected)].tolist() == expected, prompt
        assert got.token_count == len(expected)


def _hand_tokenizer(tmp_path: Path, merges: list[str]) -> TextTokenizer:
    symbols = ['<s>', '<pad>', '</s>', '<unk>', *pre_tokenizers.ByteLevel.alphabet()]
    symbols += [merge.replace(' ', '') for merge in merges] + ['<mask>']
    (tmp_path / 'vocab.json').write_text(json.dumps({s: i for i, s in enumerate(symbols)}), encoding='utf8')
    (tmp_path / 'merges.txt').write_text('#version: 0.2\n' + '\n'.join(merges) + '\n', encoding='utf8')
    return TextTokenizer.from_dir(tmp_path)


def test_encode_applies_merges_by_rank(tmp_path: Path) -> None:
    tokenizer = _hand_tokenizer(tmp_path, ['Ġ c', 'a t', 'Ġc at', 'c a'])
    # ' cat': Ġc (rank 0), at (rank 1), Ġcat (rank 2); ' act' has no pair in the list
    assert tokenizer.tokens(' cat act') == ['Ġcat', 'Ġ', 'a', 'c', 't']
    # 'cat' without a space: (a, t) outranks (c, a), so 'c' + 'at', not 'ca' + 't'
    assert tokenizer.tokens('cat') == ['c', 'at']
    ids = {s: i for s, i in json.loads((tmp_path / 'vocab.json').read_text(encoding='utf8')).items()}
    assert tokenizer.encode(' cat', max_length=5).ids.tolist() == [0, ids['Ġcat'], 2, 1, 1]
    # specials typed in a raw text are the special ids, as with BartTokenizerFast
    assert tokenizer.encode('</s>', max_length=4).ids.tolist() == [0, 2, 2, 1]


def test_encode_padding_truncation_and_flags(tiny: TextTokenizer) -> None:
    short = tiny.encode(' a cat')
    assert short.ids.dtype == np.int32 and short.ids.shape == (64,)
    assert short.attention_mask.dtype == np.int32 and short.attention_mask.shape == (64,)
    n = short.token_count
    assert short.ids[0] == BOS_ID and short.ids[n - 1] == EOS_ID and (short.ids[n:] == PAD_ID).all()
    assert short.attention_mask.tolist() == [1] * n + [0] * (64 - n)
    assert not short.truncated
    with pytest.raises(ValueError):
        short.ids[0] = 5  # frozen means frozen

    long = tiny.encode(' a cat' * 40)  # 80 tokens + 2
    assert long.token_count == 82 and long.truncated
    assert long.ids[0] == BOS_ID and long.ids[-1] == EOS_ID and long.attention_mask.all()
    assert long.ids[1:63].tolist() == tiny.encode(' a cat' * 31).ids[1:63].tolist()

    exact = tiny.encode(' a cat' * 31)  # 62 tokens + 2 = 64: fits exactly
    assert exact.token_count == 64 and not exact.truncated and exact.attention_mask.all()

    with pytest.raises(ValueError, match='max_length'):
        tiny.encode(' a cat', max_length=1)


def test_unconditional_is_the_raw_empty_string(tiny: TextTokenizer) -> None:
    uncond = tiny.unconditional()
    assert uncond.ids.tolist() == [BOS_ID, EOS_ID] + [PAD_ID] * 62
    assert uncond.attention_mask.tolist() == [1, 1] + [0] * 62
    assert uncond.token_count == 2 and not uncond.truncated
    # not the normalised empty string, which is ' ' and would add a 'Ġ' token
    assert tiny.encode(normalize_text('')).token_count == 3


def test_encode_prompt(tiny: TextTokenizer) -> None:
    prompt = 'An Astronaut riding a HORSE on the moon!!!'
    tokens = tiny.encode_prompt(prompt)
    assert tokens.prompt == prompt
    assert tokens.normalized == ' an astronaut riding a horse on the moon'
    assert tokens.encoded.ids.tolist() == tiny.encode(tokens.normalized).ids.tolist()
    assert tokens.unconditional.ids.tolist() == tiny.unconditional().ids.tolist()
    short = tiny.encode_prompt(prompt, max_length=16)
    assert short.encoded.ids.shape == short.unconditional.ids.shape == (16,)


def test_encode_prompt_uses_a_word_frequency_file_next_to_the_vocabulary(
    tiny_dir: Path, word_frequencies: Path, tmp_path: Path
) -> None:
    with_words = tmp_path / 'with-words'
    with_words.mkdir()
    for name in ('vocab.json', 'merges.txt'):
        (with_words / name).write_bytes((tiny_dir / name).read_bytes())
    (with_words / WORD_FREQUENCIES_FILENAME).write_bytes(word_frequencies.read_bytes())
    assert TextTokenizer.from_dir(with_words).encode_prompt('#sunsetbeach').normalized == ' sunset beach'
    assert TextTokenizer.from_dir(tiny_dir).encode_prompt('#sunsetbeach').normalized == ' sunsetbeach'


@pytest.mark.parametrize('prompt', ['', '   ', '\n\t'])
def test_empty_prompt_is_refused(tiny: TextTokenizer, prompt: str) -> None:
    with pytest.raises(PromptError, match='empty; use some words'):
        tiny.encode_prompt(prompt)


@pytest.mark.parametrize('prompt', ['!!!', '<b></b>', 'https://example.com/cat.png', '"', '... ,,, ;;;', '#_'])
def test_prompt_empty_after_cleaning_is_refused(tiny: TextTokenizer, prompt: str) -> None:
    with pytest.raises(PromptError, match='empty after cleaning'):
        tiny.encode_prompt(prompt)
    assert issubclass(PromptError, ValueError)


def test_not_a_bart_vocabulary_is_refused(tmp_path: Path) -> None:
    symbols = ['<pad>', '<s>', '</s>', '<unk>', *pre_tokenizers.ByteLevel.alphabet()]
    (tmp_path / 'vocab.json').write_text(json.dumps({s: i for i, s in enumerate(symbols)}), encoding='utf8')
    (tmp_path / 'merges.txt').write_text('#version: 0.2\n', encoding='utf8')
    with pytest.raises(ValueError, match='not a BART vocabulary'):
        TextTokenizer.from_dir(tmp_path)
