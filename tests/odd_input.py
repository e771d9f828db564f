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
#: The same ids as a member types them into a command or a custom_id.
NO_SUCH_JOB_ID_TEXTS = tuple(str(value) for value in NO_SUCH_JOB_IDS) + ('9999999999999999999', '99999999999999999999')

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
