"""The words of every message the bot posts about a job: queued, progress, results, a picture, ℹ️, quotas.

Plain text (no embeds): it reads the same on every client and needs no Embed Links permission.
Prompts are quoted with `discord.utils.escape_markdown` so a prompt cannot format or ping. What a job
*is* (its first line, `what`) comes from its operation's cog (`bot.operations.describe`); these
functions only put it in its place.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import discord

from bot.errors import redact
from bot.utils import results
from edalle.jobs import Admission, Job, JobStatus, Quota
from edalle.operations.base import BUCKET_NOUNS, BUCKETS, Picture


def quoted(prompt: str, limit: int = 300) -> str:
    text = prompt if len(prompt) <= limit else prompt[: limit - 1] + '…'
    return f'“{discord.utils.escape_mentions(discord.utils.escape_markdown(text))}”'


def eta(seconds: float | None) -> str:
    if seconds is None:
        return 'ETA unknown'
    if seconds < 1:
        return 'starting now'
    return f'ETA <t:{int(time.time() + seconds)}:R>'


def duration(seconds: float) -> str:
    """`45 s`, `12 min`, `1 h 05 min`: a length of time as a member reads it."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f'{seconds} s'
    minutes = round(seconds / 60)
    return f'{minutes} min' if minutes < 60 else f'{minutes // 60} h {minutes % 60:02d} min'


def run_estimate(seconds: float | None) -> str | None:
    """The line saying how long the job itself runs (`Operation.estimate_seconds`: measured on a CPU worker)."""
    if seconds is None:
        return None
    return f'The run itself takes about {duration(seconds)} on a CPU worker (far less on a GPU).'


def queued(admission: Admission, what: str, *, cut: bool = False, run_seconds: float | None = None) -> str:
    job = admission.job
    lines = [
        f'{what} · <@{job.user_id}>',
        f'job #{job.id} · queued, {_ahead(admission.position)} · {eta(admission.eta_seconds)}',
    ]
    estimate = run_estimate(run_seconds)
    if estimate:
        lines.append(estimate)
    if cut:
        lines.append('(Your prompt was long, so I cut it to the part shown above.)')
    return '\n'.join(lines)


def queued_line(admission: Admission, title: str) -> str:
    """A queued job as one line of a message shared by several members (each line is led by its member's mention)."""
    return f'{title} · job #{admission.job.id} · queued, {_ahead(admission.position)}'


def _ahead(ahead: int) -> str:
    return 'next in line' if ahead == 0 else f'{ahead} ahead'


def progress(
    job: Job, what: str, ahead: int | None, stages: Mapping[str, str] | None = None, run_seconds: float | None = None
) -> str:
    """The status message while a job waits or runs; `stages` words the worker's stage names (its operation's), and
    `run_seconds` how long it will run, said while it waits."""
    head = f'{what} · <@{job.user_id}>'
    if job.status is JobStatus.QUEUED:
        retry = f' (retry {job.attempt + 1})' if job.attempt else ''
        estimate = run_estimate(run_seconds)
        return f'{head}\njob #{job.id} · queued, {_ahead(ahead or 0)}{retry}' + (f'\n{estimate}' if estimate else '')
    stage = (stages or {}).get(job.stage or '', job.stage or 'starting')
    steps = f' {job.step}/{job.total}' if job.total else ''
    cancelling = ' · cancelling…' if job.cancel_requested else ''
    return f'{head}\njob #{job.id} · {stage}{steps}{cancelling}'


def done(job: Job, what: str, picture: Picture) -> str:
    """A one-picture result: what it was, and its size."""
    return f'{what} · <@{job.user_id}>\njob #{job.id} · done · {picture.width}×{picture.height}'


def failed(job: Job, what: str) -> str:
    reason = redact(job.error or 'the worker could not finish it')  # written for members; redacted all the same
    return f'{what} · <@{job.user_id}>\n❌ job #{job.id} failed: {reason}'


def cancelled(job: Job, what: str) -> str:
    return f'{what} · <@{job.user_id}>\n✖️ job #{job.id} was cancelled.'


def picture(job: Job, picture: Picture, caption: str, hints: Sequence[str]) -> str:
    """A picture posted alone: which one (`caption`), its score, whose, and what its controls do."""
    score = f' · CLIP {picture.score:.3f}' if picture.score is not None else ''
    return '\n'.join([f'🖼️ {caption}{score} · <@{job.user_id}>', *hints])


def info(job: Job, picture: Picture | None, details: Sequence[str], lineage: str) -> str:
    """ℹ️: the job, its prompt, the picture's own facts, the operation's `details`, and where the picture came from."""
    lines = [f'**Job #{job.id}** ({job.kind}, {job.status.value}) by <@{job.user_id}>']
    prompt = results.prompt_of(job)
    if prompt:
        lines.append(f'Prompt: {quoted(prompt, 1500)}')
    if picture is not None and picture.score is not None:
        lines.append(f'Candidate {picture.index + 1} · CLIP score {picture.score:.4f}')
    if picture is not None and picture.seed is not None and not details:
        lines.append(f'Seed: {picture.seed}')
    if picture is not None and picture.knobs:
        lines.append(f'Knobs: {knobs_line(picture.knobs)}')
    lines.extend(details)
    if lineage:
        lines.append(f'Lineage: {lineage}')
    return '\n'.join(lines)


KNOB_WORDS = {'temperature': 'temperature', 'top_k': 'top-k', 'top_p': 'top-p', 'cond_scale': 'scale'}


def knobs_line(knobs: Mapping[str, object]) -> str:
    """`temperature 1 · top-k 50 · top-p off · scale 10 · no “text”`: the sampling knobs as members set them."""
    parts = []
    for key, word in KNOB_WORDS.items():
        if key in knobs:
            value = knobs[key]
            shown = (
                ('all' if key == 'top_k' else 'off')
                if value is None
                else f'{value:g}'
                if isinstance(value, float)
                else value
            )
            parts.append(f'{word} {shown}')
    if knobs.get('negative'):
        parts.append(f'no {quoted(str(knobs["negative"]), 200)}')
    return ' · '.join(parts)


def quota_line(quota: Quota) -> str:
    parts = [f'{quota.left(bucket)} of {quota.limits.get(bucket, 0)} {BUCKET_NOUNS[bucket]}s' for bucket in BUCKETS]
    return f'Today: {" and ".join(parts)} left; the quota resets <t:{int(quota.resets_at)}:R>.'
