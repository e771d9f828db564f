"""Typed domain errors whose text a Discord user can read.

Each class's docstring is its default message (procrastinate's `exceptions.py`), so a cog can
reply with `str(error)` and never show a traceback. Errors carry the facts behind the message
(`QuotaExceeded.resets_at`, `CooldownActive.retry_after`) so the bot can format them its own way,
e.g. as a Discord relative timestamp.
"""

from __future__ import annotations

from datetime import datetime, timezone


class EdalleError(Exception):
    """Something went wrong. Please try again later."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or '').strip().splitlines()[0])

    @property
    def user_message(self) -> str:
        return str(self)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _duration(seconds: float) -> str:
    """`3 h 05 min`, `4 min`, `12 s`: short enough for a one-line Discord reply."""
    seconds = max(0, int(seconds + 0.999))
    if seconds < 60:
        return f'{seconds} s'
    minutes = (seconds + 59) // 60
    if minutes < 60:
        return f'{minutes} min'
    return f'{minutes // 60} h {minutes % 60:02d} min'


# ---- enqueue refusals: nothing was written -------------------------------------------------------


class AdmissionRefused(EdalleError):
    """You can't start a job right now."""


class Banned(AdmissionRefused):
    """You are not allowed to use image commands here."""

    def __init__(self, reason: str | None = None, until: float | None = None) -> None:
        self.reason = reason
        self.until = until
        message = 'You are not allowed to use image commands here'
        if until is not None:
            message += f' until {_utc(until):%Y-%m-%d %H:%M} UTC'
        message += f' (reason: {reason}).' if reason else '.'
        super().__init__(message)


class CooldownActive(AdmissionRefused):
    """Slow down a little before starting another job."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f'Slow down a little: you can start another job in {_duration(retry_after)}.')


class QuotaExceeded(AdmissionRefused):
    """You have used today's quota."""

    def __init__(self, kind: str, limit: int, resets_at: float, now: float, *, noun: str | None = None) -> None:
        self.kind = kind  # the job kind asked for
        self.limit = limit
        self.resets_at = resets_at
        super().__init__(
            f"You have used all {limit} of today's {noun or kind} jobs. The quota resets at "
            f'{_utc(resets_at):%H:%M} UTC (in {_duration(resets_at - now)}); failed and cancelled jobs do not count.'
        )


class TooManyPending(AdmissionRefused):
    """You already have as many jobs waiting as you may."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f'You already have {limit} job{"s" if limit != 1 else ""} waiting or running. '
            'Wait for one to finish, or cancel one, then try again.'
        )


class QueueFull(AdmissionRefused):
    """The queue is full right now. Please try again in a few minutes."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        super().__init__()


class RequestTooLarge(AdmissionRefused):
    """That asks for more than this server allows."""

    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        super().__init__(f'That asks for too much: at most {limit} {what} here.')


class PromptRejected(AdmissionRefused):
    """That prompt contains a word this server has blocked."""


class ChannelNotAllowed(AdmissionRefused):
    """Image commands are not enabled in this channel."""


class InvalidParent(AdmissionRefused):
    """Pick a picture of a finished job to start from."""


class OperationDisabled(AdmissionRefused):
    """That is switched off in this server."""

    def __init__(self, title: str) -> None:
        self.title = title
        super().__init__(f'{title.capitalize()} is switched off in this server; ask an admin if you need it.')


# ---- jobs ----------------------------------------------------------------------------------------


class JobNotFound(EdalleError):
    """I can't find that job."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"I can't find job #{job_id}.")


class InvalidId(EdalleError):
    """That id cannot be anyone's on Discord."""

    def __init__(self, what: str, value: object) -> None:
        self.what = what  # 'user', 'server', 'channel', 'message', in a member's words
        self.value = value
        super().__init__(f'There is no {what} with id {value}.')


class NotJobOwner(EdalleError):
    """Only the person who started this job (or an admin) can do that."""


class JobAlreadyFinished(EdalleError):
    """That job has already finished."""

    def __init__(self, job_id: int, status: str) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(f'Job #{job_id} has already {status}.')


class RunFailed(EdalleError):
    """The job failed."""


# ---- settings and the database -------------------------------------------------------------------


class InvalidSetting(EdalleError):
    """That is not a valid value for this setting."""


class SchemaTooNew(EdalleError):
    """The database was written by a newer edalle."""

    def __init__(self, path: str, db_version: int, known_version: int) -> None:
        self.db_version = db_version
        self.known_version = known_version
        super().__init__(
            f'The database {path} has schema version {db_version}, but this edalle only knows versions up to '
            f'{known_version}. Upgrade edalle (or point it at another database); refusing to open it so nothing is damaged.'
        )
