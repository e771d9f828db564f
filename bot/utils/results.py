"""Reading a finished job's result: where its files are and the facts beside them.

The worker stores a JSON summary in the job row (every result is a list of pictures, see
`edalle.operations.base.pictures_of`) and the files under `<data dir>/images/<job id>/<attempt>/`.
Paths in the summary are relative to the data dir.
"""

from __future__ import annotations

from pathlib import Path

from edalle.jobs import Job
from edalle.operations.base import Picture


def resolve(data_dir: Path, job_id: int, value: str | None) -> Path | None:
    """A path from a result summary: absolute, relative to the data dir, or relative to the job's folder."""
    if not value:
        return None
    path = Path(value)
    if path.is_absolute():
        return path
    for candidate in (data_dir / path, data_dir / 'images' / str(job_id) / path):
        if candidate.is_file():
            return candidate
    return data_dir / path


def picture_path(data_dir: Path, job: Job, picture: Picture) -> Path:
    return (
        resolve(data_dir, job.id, picture.path) or data_dir / 'images' / str(job.id) / f'candidate-{picture.index + 1}.png'
    )


def grid_path(job: Job, data_dir: Path) -> Path:
    result = job.result or {}
    value = result.get('grid') or result.get('grid_path')
    return (
        resolve(data_dir, job.id, value if isinstance(value, str) else None)
        or data_dir / 'images' / str(job.id) / 'grid.png'
    )


def prompt_of(job: Job) -> str:
    """The prompt as the member typed it (a job without its own prompt shows the one its result used)."""
    return str((job.payload or {}).get('prompt') or (job.result or {}).get('prompt') or '')


def was_truncated(job: Job) -> bool:
    return bool((job.result or {}).get('truncated'))
