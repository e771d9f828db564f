"""What an operation is, and the shapes every operation shares: its result (pictures), its run contract.

An operation is one kind of job (imagine, expand, …) described once, in one module of this package:

- its request: the payload fields, their defaults, and the checks with the words a member reads
  (`Operation.check`, run inside the store's admission transaction, so a bad request charges nothing);
- which source it takes (`takes_picture`: any picture of any succeeded job, or a member's upload) and
  whether that source must be the requester's own (`owner_only`);
- its daily quota bucket (`bucket`) and compute class (`compute`), and what it can be batched with
  (`compat_key`: jobs with equal keys may run as one call on a worker, when `batchable`);
- its runner on the worker (`run`) and the shape of its result (a list of `Picture`s plus optional media);
- the bot module that holds its commands, components and rendering (`discord`).

The registry (`edalle.operations`) lists them; the job store, the worker and the bot know operations only
through it. This module imports nothing heavy: the bot imports it (and the operation modules) for the
request types, and only a runner, on the worker, imports models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from edalle.errors import AdmissionRefused, RunFailed
from edalle.jobs.store import UPLOADS_DIR, Job, JobRequest
from edalle.outputs import RunFolder

if TYPE_CHECKING:
    from PIL import Image

    from edalle.jobs.limits import Limits

Bucket = Literal['daily_imagines', 'daily_edits']
Compute = Literal['sampling', 'optimising', 'feed-forward']
BUCKETS: tuple[Bucket, ...] = ('daily_imagines', 'daily_edits')
#: how a bucket is named in messages ("today's imagine jobs", "today's edit jobs")
BUCKET_NOUNS: dict[str, str] = {'daily_imagines': 'imagine', 'daily_edits': 'edit'}
PICTURE_SIDE = 256  # DALL·E mini's picture side; a token covers 16 × 16 pixels


class RequestError(AdmissionRefused, ValueError):
    """That request is not one I can run."""


# ---- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    """One picture of a result: what any next operation needs to start from it.

    `tokens` is the VQGAN token grid (16 × 16 per 256 × 256 px) where the picture was drawn from tokens
    (a candidate); pictures made by optimisation keep their pixels exact and have none (the next
    operation encodes them again). `knobs` are the settings that drew it, shown by ℹ️.
    """

    index: int  # 0-based position in its result (for an imagine: the rank, best first)
    path: str  # relative to the data dir
    width: int
    height: int
    tokens: list[list[int]] | None = None
    score: float | None = None  # CLIP score, where ranked
    seed: int | None = None
    knobs: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, entry: Mapping[str, Any], position: int) -> Picture:
        path = next((entry[k] for k in ('path', 'image', 'file') if isinstance(entry.get(k), str)), '')
        return cls(
            index=int(entry.get('index', position)),
            path=path,
            width=int(entry.get('width') or PICTURE_SIDE),
            height=int(entry.get('height') or PICTURE_SIDE),
            tokens=entry.get('tokens'),
            score=entry.get('score'),
            seed=entry.get('seed'),
            knobs=entry.get('knobs'),
        )


def pictures_of(result: Mapping[str, Any] | None) -> list[Picture]:
    """A result's pictures, by index. Results written before pictures were one list are read too: an imagine's
    `candidates`, and an expand's single `path` with its `width` and `height`."""
    if not result:
        return []
    entries = result.get('pictures')
    if entries is None:
        entries = result.get('candidates')
    if entries is None and isinstance(result.get('path'), str):
        entries = [{'index': 0, **{k: result.get(k) for k in ('path', 'width', 'height', 'seed')}}]
    pictures = [Picture.from_json(entry, position) for position, entry in enumerate(entries or [])]
    return sorted(pictures, key=lambda picture: picture.index)


def picture_of(result: Mapping[str, Any] | None, index: int) -> Picture | None:
    return next((p for p in pictures_of(result) if p.index == index), None)


TIMELAPSE = 'timelapse'  # a result's media kind: an animation of its optimisation, the final picture last


def media_of(result: Mapping[str, Any] | None) -> dict[str, str]:
    """A result's media files by kind (`{TIMELAPSE: 'images/…/timelapse.gif'}`), paths relative to the data dir."""
    media = (result or {}).get('media')
    return {str(k): v for k, v in media.items() if isinstance(v, str)} if isinstance(media, Mapping) else {}


# ---- the run contract -----------------------------------------------------------------------------


class Cancelled(Exception):
    """Raised inside a runner when the worker asks it to stop: a cancel, or a shutdown handing jobs back."""


@dataclass(frozen=True)
class WorkItem:
    """One claimed job as a runner sees it."""

    job: Job
    folder: RunFolder  # where this attempt writes its files
    parent: Job | None = None  # the job whose picture it starts from (its files fetched already)


class RunContext(Protocol):
    def progress(
        self, stage: str, done: int, total: int, preview: Image.Image | Mapping[int, Image.Image] | None = None
    ) -> None: ...  # a preview for every job of the batch, or {job id: picture}
    def should_cancel(self) -> bool: ...
    def check_cancel(self) -> None: ...  # raises Cancelled


Outcome = dict[str, Any] | RunFailed


@dataclass(frozen=True)
class SourcePicture:
    """What a picture-taking runner starts from: the picture's pixels (RGB, its own size), its entry in its job's
    result (None for an upload: no tokens, no prompt), and the prompt it was made with ('' when it has none)."""

    image: Image.Image
    picture: Picture | None
    prompt: str


def load_source(item: WorkItem, *, gone: str, upload_gone: str) -> SourcePicture | RunFailed:
    """The picture a job starts from: picture `parent_index` of its parent's result, or the member's upload that the
    bot checked and stored under `uploads/` (fetched from the result store before the run). `gone` and
    `upload_gone` are the operation's words for a picture whose file has disappeared."""
    from PIL import Image

    job, parent, data_dir = item.job, item.parent, item.folder.data_dir
    if (job.payload or {}).get('source_path'):
        path = (data_dir / str(job.payload['source_path'])).resolve()
        if not path.is_relative_to((data_dir / UPLOADS_DIR).resolve()):
            return RunFailed(upload_gone)  # the store checks the path; this keeps a bad row from reading outside
        picture, prompt = None, ''
    else:
        picture = picture_of(parent.result, job.parent_index or 0) if parent is not None else None
        if parent is None or picture is None:
            return RunFailed(gone)
        path = data_dir / picture.path
        # the parent's own prompt, or the one its result was made with (an expand of an expand)
        prompt = str((parent.payload or {}).get('prompt') or (parent.result or {}).get('prompt') or '')
    try:
        with Image.open(path) as opened:
            image = opened.convert('RGB')
    except OSError:
        return RunFailed(upload_gone if picture is None else gone)
    return SourcePicture(image, picture, prompt)


# ---- the operation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a picture-taking job starts: picture `index` of job `job_id`, or a member's upload at `upload`."""

    job_id: int | None = None
    index: int | None = None
    upload: str | None = None  # `uploads/….png`, relative to the data dir
    upload_name: str | None = None  # the file name as the member sent it (shown, never used as a path)

    @classmethod
    def of(
        cls, parent_job_id: int | None, parent_index: int | None, source_path: str | None, source_name: str | None
    ) -> Source:
        """The source an operation's `request(...)` keywords name: the upload where `source_path` is given."""
        if source_path is not None:
            return cls(upload=source_path, upload_name=source_name)
        return cls(job_id=parent_job_id, index=parent_index)

    def fields(self) -> dict[str, Any]:
        """The request fields this source sets: the parent columns, or the payload's upload keys."""
        if self.upload is not None:
            return {'payload': {'source_path': self.upload, 'source_name': self.upload_name}}
        return {'parent_job_id': self.job_id, 'parent_index': self.index, 'payload': {}}


class Operation:
    """One kind of job; subclasses set the class attributes and override what differs."""

    name: ClassVar[str]  # the job kind in the store, and the command's name
    title: ClassVar[str]  # how members read it: 'imagine', 'expand', 'zoom out', …
    bucket: ClassVar[Bucket]
    compute: ClassVar[Compute]
    discord: ClassVar[str]  # the bot module (an extension) with its commands, components and rendering
    takes_picture: ClassVar[bool] = False  # starts from a picture of a succeeded job, or an upload
    picture_optional: ClassVar[bool] = False  # … or from nothing (a dream from a prompt alone, or refining a picture)
    owner_only: ClassVar[bool] = True  # that picture must be the requester's own (admins excepted)
    batchable: ClassVar[bool] = False  # several jobs with one compat key may run as one call
    text_fields: ClassVar[tuple[str, ...]] = ('prompt',)  # payload fields members write (blocked words apply)

    # ---- the request --------------------------------------------------------------------------------

    def build(
        self,
        payload: Mapping[str, Any],
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        source: Source | None = None,
        request_key: str | None = None,
        priority: int = 0,
        admin: bool = False,
    ) -> JobRequest:
        """A request for this operation: `payload` (its fields, `preset` among them) from `source`."""
        located: dict[str, Any] = source.fields() if source is not None else {'payload': {}}
        full = {**payload, **located.pop('payload')}
        return JobRequest(
            self.name,
            user_id,
            guild_id,
            channel_id,
            full,
            self.compat_key(full),
            request_key=request_key,
            priority=priority,
            admin=admin,
            **located,
        )

    def check(self, payload: Mapping[str, Any], limits: Limits) -> None:
        """Refuse what this operation cannot run or this server does not allow (raise `AdmissionRefused`)."""

    def fit(self, payload: Mapping[str, Any], limits: Limits) -> Mapping[str, Any]:
        """The payload shaped to this member's limits where asking for less is better than a refusal (the bot's
        drafts ask for the most a member may get: nine candidates, …); by default unchanged."""
        return payload

    def texts(self, payload: Mapping[str, Any]) -> list[str]:
        """The member-written texts of a payload (blocked words are checked in each)."""
        return [str(payload[name]) for name in self.text_fields if payload.get(name)]

    def compat_key(self, payload: Mapping[str, Any]) -> str:
        """Jobs with equal keys may run as one batch; by default the kind and the models (the preset)."""
        return f'{self.name}:{payload.get("preset", "mini")}'

    def compat_prefix(self, preset: str) -> str:
        """The compat keys a worker loaded with `preset` serves for this operation (matched as a prefix)."""
        return f'{self.name}:{preset}'

    def label(self, payload: Mapping[str, Any]) -> str:
        """This job as one step of a picture's lineage: 'imagine', 'expand 16:9', 'zoom 2×'."""
        return self.title

    def estimate_seconds(self, payload: Mapping[str, Any]) -> float | None:
        """How long one run of this request takes on a worker, estimated before it is queued; None: no estimate."""
        return None

    # ---- the worker side ----------------------------------------------------------------------------

    def warm_up(self, engine: Any) -> None:
        """Once per worker, before its first claim: work the runner would otherwise do in its first job."""

    def missing(self, preset: str, data_dir: Path) -> str | None:
        """Why a worker (or the bot beside one) with `preset`'s files in `data_dir` cannot run this operation, in
        words saying how to fix it; None when it can. Workers serve only the operations they can run."""
        return None

    def run(self, engine: Any, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]:
        """Run claimed jobs on the worker's loaded `engine`; one outcome per item (a result dict or `RunFailed`).

        Runs on the worker's job thread. Any exception other than `RunFailed`/`Cancelled` means
        "something broke": the worker logs it and retries the job while attempts are left.
        """
        raise NotImplementedError
