"""The words of every message the bot posts about a job: queued, progress, results, info.

Plain text (no embeds): it reads the same on every client and needs no Embed Links permission.
Prompts are quoted with `discord.utils.escape_markdown` so a prompt cannot format or ping.
"""

from __future__ import annotations

import time
from pathlib import Path

import discord

from bot.errors import redact
from bot.utils import results
from bot.utils.views import NUMBER_EMOJI
from edalle.jobs import EXPAND, Admission, Job, JobStatus, Quota

_STAGES = {
    'encode': 'reading the prompt',
    'sample': 'drawing',
    'decode': 'decoding',
    'rank': 'ranking with CLIP',
    'expand': 'expanding',
}


def quoted(prompt: str, limit: int = 300) -> str:
    text = prompt if len(prompt) <= limit else prompt[: limit - 1] + '…'
    return f'“{discord.utils.escape_mentions(discord.utils.escape_markdown(text))}”'


def eta(seconds: float | None) -> str:
    if seconds is None:
        return 'ETA unknown'
    if seconds < 1:
        return 'starting now'
    return f'ETA <t:{int(time.time() + seconds)}:R>'


def _what(job: Job) -> str:
    if job.kind == EXPAND:
        ratio = (job.payload or {}).get('ratio', '16:9')
        return f'↔️ expand to {ratio} of {_source(job)}'
    return f'🎨 {quoted(results.prompt_of(job))}'


def _source(job: Job) -> str:
    """What an expand widens: a candidate of an imagine job, or the member's own picture (by its file name)."""
    if job.parent_job_id is not None:
        return f'job #{job.parent_job_id}, candidate {(job.parent_index or 0) + 1}'
    name = (job.payload or {}).get('source_name')
    return f'your image {quoted(str(name), 80)}' if name else 'your image'


def queued(admission: Admission, *, cut: bool = False) -> str:
    job = admission.job
    lines = [
        f'{_what(job)} · <@{job.user_id}>',
        f'job #{job.id} · queued, {_ahead(admission.position)} · {eta(admission.eta_seconds)}',
    ]
    if cut:
        lines.append('(Your prompt was long, so I cut it to the part shown above.)')
    return '\n'.join(lines)


def _ahead(ahead: int) -> str:
    return 'next in line' if ahead == 0 else f'{ahead} ahead'


def progress(job: Job, ahead: int | None) -> str:
    """The status message while a job waits or runs."""
    head = f'{_what(job)} · <@{job.user_id}>'
    if job.status is JobStatus.QUEUED:
        retry = f' (retry {job.attempt + 1})' if job.attempt else ''
        return f'{head}\njob #{job.id} · queued, {_ahead(ahead or 0)}{retry}'
    stage = _STAGES.get(job.stage or '', job.stage or 'starting')
    steps = f' {job.step}/{job.total}' if job.total else ''
    cancelling = ' · cancelling…' if job.cancel_requested else ''
    return f'{head}\njob #{job.id} · {stage}{steps}{cancelling}'


def imagine_result(job: Job, data_dir: Path) -> str:
    found = results.candidates(job, data_dir)
    best = found[0] if found else None
    facts = [f'job #{job.id}', f'{len(found)} candidates, best first by CLIP']
    if best is not None and best.score is not None:
        facts.append(f'best score {best.score:.3f}')
    if job.run_seconds:
        facts.append(f'{job.run_seconds:.0f} s')
    lines = [f'🎨 {quoted(results.prompt_of(job))} · <@{job.user_id}>', ' · '.join(facts)]
    lines.append(
        f'Pick one with the buttons, or react {NUMBER_EMOJI[0]}…{NUMBER_EMOJI[min(len(found), 9) - 1] if found else ""}.'
    )
    if results.was_truncated(job):
        lines.append('(The prompt was longer than the model reads; only its start was used.)')
    return '\n'.join(lines)


def expand_result(job: Job) -> str:
    size = job.result or {}
    dims = f' · {size["width"]}×{size["height"]}' if 'width' in size and 'height' in size else ''
    return f'{_what(job)} · <@{job.user_id}>\njob #{job.id} · done{dims}'


def failed(job: Job) -> str:
    reason = redact(job.error or 'the worker could not finish it')  # written for members; redacted all the same
    return f'{_what(job)} · <@{job.user_id}>\n❌ job #{job.id} failed: {reason}'


def cancelled(job: Job) -> str:
    return f'{_what(job)} · <@{job.user_id}>\n✖️ job #{job.id} was cancelled.'


def candidate(job: Job, info: results.CandidateInfo) -> str:
    score = f' · CLIP {info.score:.3f}' if info.score is not None else ''
    return (
        f'🖼️ candidate {info.index + 1} of job #{job.id}{score} · <@{job.user_id}>\n'
        'Expand it with ↔️ 16:9, ↕️ 9:16 or another ratio below (or react ↔️).'
    )


def info(job: Job, info: results.CandidateInfo | None) -> str:
    lines = [f'**Job #{job.id}** ({job.kind}, {job.status.value}) by <@{job.user_id}>']
    lines.append(f'Prompt: {quoted(results.prompt_of(job), 1500)}')
    if info is not None:
        lines.append(f'Candidate {info.index + 1}' + (f' · CLIP score {info.score:.4f}' if info.score is not None else ''))
        if info.seed is not None:
            lines.append(f'Seed: {info.seed}')
    elif job.kind == EXPAND:
        result = job.result or {}
        payload = job.payload or {}
        settings = result.get('settings') if isinstance(result.get('settings'), dict) else {}
        lines.append(f'Expanded {_source(job)} to {payload.get("ratio")}')
        for key in ('steps', 'seed', 'width', 'height'):
            value = result.get(key, settings.get(key, payload.get(key)))
            if value is not None:
                lines.append(f'{key.capitalize()}: {value}')
    return '\n'.join(lines)


def quota_line(quota: Quota) -> str:
    return (
        f'Today: {quota.imagines_left} of {quota.imagines_limit} imagines and {quota.expands_left} of {quota.expands_limit} '
        f'expands left; the quota resets <t:{int(quota.resets_at)}:R>.'
    )
