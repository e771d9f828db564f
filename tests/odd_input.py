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
