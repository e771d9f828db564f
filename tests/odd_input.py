"""Hostile and odd member input, as tables the tests share (store, prompt and Discord-level tests alike).

    from odd_input import IDS_OUT_OF_RANGE, NO_SUCH_JOB_IDS

Each table says what a member can send and what should happen to it; the tests that use them say where.
"""

from __future__ import annotations

# ---- ids ---------------------------------------------------------------------------------------------------
# A member types ids (`.job 99999999999999999999`, `.cancel -1`) and a modified client can rewrite a button's
# custom_id (`ed:pick:9999999999999999999:0`). The stores keep ids in signed 64-bit columns.

#: Ids a signed 64-bit column holds, but no Discord object or job has: every verb just finds nothing.
IDS_IN_RANGE = (-1, 0, 2**63 - 1)
#: Ids no column holds: a job id is "I can't find job #…", a user/server/channel id `InvalidId`.
IDS_OUT_OF_RANGE = (2**63, 10**20, -(2**63) - 1)
#: Every job id above: none names a job.
NO_SUCH_JOB_IDS = IDS_IN_RANGE + IDS_OUT_OF_RANGE
#: The same ids as a member types them into a command (`.job <id>`, `.cancel <id>`).
NO_SUCH_JOB_ID_TEXTS = tuple(str(value) for value in NO_SUCH_JOB_IDS) + ('9999999999999999999', '99999999999999999999')
#: Custom ids a modified client may send: each matches a template of `bot.utils.custom_ids` (19 digits at most),
#: but names no job, and the ones past 2**63 − 1 no job could have.
NO_SUCH_JOB_CUSTOM_IDS = tuple(
    custom_id
    for job_id in ('0', '9223372036854775807', '9223372036854775808', '9999999999999999999')
    for custom_id in (
        f'ed:pick:{job_id}:0',
        f'ed:reroll:{job_id}',
        f'ed:cancel:{job_id}',
        f'ed:info:{job_id}:0',
        f'ed:expand:{job_id}:0:16x9',
        f'ed:ratios:{job_id}:0',
    )
)

# ---- admin values ------------------------------------------------------------------------------------------
# `.admin set <limit> <value>` and `.admin user @member <limit> <value>` pass the text as typed.

#: (limit, value as typed or given, what is stored): accepted values, normalised.
SETTING_VALUES_ACCEPTED = (
    ('cooldown_seconds', '-0', 0.0),
    ('cooldown_seconds', '-0.0', 0.0),
    ('cooldown_seconds', -0.0, 0.0),
    ('cooldown_seconds', ' 2.5 ', 2.5),
    ('cooldown_seconds', '1e3', 1000.0),
    ('cooldown_seconds', 86_400, 86_400.0),
    ('daily_imagines', '-0', 0),
    ('daily_imagines', '1e3', 1000),
    ('daily_imagines', 7.0, 7),
    ('daily_imagines', '10000', 10_000),
)
#: (limit, value): refused with the limit's valid range, and nothing stored.
SETTING_VALUES_REFUSED = tuple(
    (key, value)
    for key in ('cooldown_seconds', 'daily_imagines')
    for value in (
        'nan', 'NaN', '-nan', float('nan'),
        'inf', '-inf', 'Infinity', float('inf'), '1e999', '-1e999',
        '99999999999999999999', 10**20, 2**63, '9' * 5000,
        '-1', '-0.5', True, '', ' ', 'many', '0x10', '12abc', [3],
    )
) + (
    ('cooldown_seconds', '86400.001'),
    ('daily_imagines', '10001'),
    ('daily_imagines', '2.5'),
    ('daily_imagines', 2.5),
)  # fmt: skip

# ---- prompts -----------------------------------------------------------------------------------------------
# Every text field (prompt, negative prompt, remix, region prompt) goes through `bot.utils.prompts.clean_prompt`.

#: Texts that hold nothing to draw: `clean_prompt` gives '', and the operation refuses them before queueing.
EMPTY_PROMPTS = {
    'controls': '\x01\x02\x07\x1b\x7f',
    'bidi overrides and isolates': '\u202e\u202d\u2066\u2069',
    'zero-width characters': '\u200b\u200c\u200d\u2060\ufeff',
    'soft hyphens': '\u00ad\u00ad',
    'whitespace and controls': ' \t\x00\n \x1f \u3000',
    'hangul fillers': '\u3164\u115f',
    'braille blanks': '\u2800\u2800',
    'combining marks alone': '\u0301\u0308\u034f',
    'punctuation alone': '... ?!',
    'variation selectors alone': '\ufe0f\ufe0e',
    'tag characters alone': '\U000e0062\U000e006c\U000e006f',
    'a lone surrogate': '\ud800',
    'all of them': '\u202e \x07\u200b\u00ad \ufe0f',
}
#: (as sent, as queued): what stays, what goes.
KEPT_PROMPTS = {
    'ordinary text': ('  a   red\n fox ', 'a red fox'),
    'an emoji ZWJ sequence': ('a 👩\u200d💻 at night', 'a 👩\u200d💻 at night'),
    'a family (three ZWJs)': ('👨\u200d👩\u200d👧', '👨\u200d👩\u200d👧'),
    'an emoji with VS16': ('❤\ufe0f hearts', '❤\ufe0f hearts'),
    'a keycap': ('1\ufe0f\u20e3 one', '1\ufe0f\u20e3 one'),
    'a flag': ('🇫🇷 flag', '🇫🇷 flag'),
    'a tag-sequence flag': (
        '🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f flag',
        '🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f flag',
    ),
    'a skin tone': ('👍🏽 ok', '👍🏽 ok'),
    'an emoji newer than the Unicode tables of Python 3.11': ('🫨', '🫨'),
    'an emoji alone': ('🐱', '🐱'),
    'a zero-width space inside a word': ('bl\u200bood moon', 'blood moon'),
    'a bidi override before a word': ('\u202ecat', 'cat'),
    'a control inside': ('a\x07 cat', 'a cat'),
    'a ZWJ that joins no emoji': ('👍\u200da', '👍a'),
    'a variation selector after a letter': ('a\ufe0f cat', 'a cat'),
    'tags hidden after an emoji': ('👍\U000e0062\U000e006c ok', '👍 ok'),
    'accents': ('café crème', 'café crème'),
    'combining accents': ('cafe\u0301', 'cafe\u0301'),
    'Persian with a ZWNJ (the model reads the words, not the joining)': ('می\u200cخواهم', 'میخواهم'),
    'Chinese': ('一只猫', '一只猫'),
    'punctuation with a word': ('... cat?!', '... cat?!'),
}

# ---- blocked words -----------------------------------------------------------------------------------------

#: With "blood" blocked, each of these is refused: the ways members dodge a word filter.
BLOOD_EVASIONS = {
    'zero-width space': 'a bl\u200bood moon',
    'zero-width joiner': 'a bl\u200dood moon',
    'zero-width non-joiner': 'a bl\u200cood moon',
    'soft hyphen': 'a bl\u00adood moon',
    'word joiner': 'a b\u2060lood moon',
    'bidi override': 'a \u202eblood moon',
    'variation selector': 'a bl\ufe0food moon',
    'Cyrillic о': 'a blооd moon',
    'Greek ο': 'a blοοd moon',
    'Greek β': 'a βlood moon',
    'Cyrillic Ь': 'a Ьlood moon',
    'Cyrillic ԁ': 'a bloo\u0501 moon',
    'letters split by dots': 'a b.l.o.o.d moon',
    'letters split by spaces': 'a b l o o d moon',
    'letters split by dashes, with leetspeak': 'a b-l-0-0-d moon',
    'leetspeak zeros': 'a bl00d moon',
    'leetspeak 8': 'an 8lood moon',
    'a capital I for the l': 'a bIood moon',
    'a pipe for the l': 'a b|ood moon',
    'plural': 'two bloods',
    'case': 'a BLOOD moon',
    'accents': 'a blóód moon',
    'combining marks': 'a b\u0301l\u0308ood moon',
    'fullwidth letters': 'a ｂｌｏｏｄ moon',
    'mathematical letters': 'a 𝐛𝐥𝐨𝐨𝐝 moon',
    'circled letters': 'a ⓑⓛⓞⓞⓓ moon',
    'parenthesised letters': 'a ⒝⒧⒪⒪⒟ moon',
    'small capitals (read as "blood" by the model)': 'a ʙʟᴏᴏᴅ moon',
    'an HTML entity (read as "blood" by the model)': 'a bl&#111;od moon',
    'the drop-of-blood emoji (read as "drop of blood" by the model)': 'a 🩸 moon',
    'a possessive': "the blood's colour",
    'punctuation around': '"blood!"',
}
#: With "blood" blocked, ordinary text that passes: words that merely contain the letters, and words beside them.
BLOOD_ALLOWED = {
    'a longer word': 'a bloodhound',
    'a word ending in it': 'lifeblood',
    'a compound': 'the bloodline',
    'bloody (needs blood*)': 'a bloody nose',
    'a word split unevenly (not caught)': 'bl ood',
    'single letters that spell another word': 'b l o o m',
    'single letters nearby': 'a b c d',
    'close spellings': 'blond bold blocd',
    'digits alone': '800 horses and 1337 ducks',
}
