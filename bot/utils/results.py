"""Reading a finished job's result: the files the worker wrote and the facts beside them.

The worker stores a JSON summary in the job row and the pictures under `<data dir>/images/<job id>/`
(`edalle.outputs`: `candidate-1.png …` ranked best-first, `grid.png`, `manifest.json`). Paths in the
summary are relative to the data dir; this module is the one place in the bot that knows the keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edalle.jobs import EXPAND, IMAGINE, Job

_PATH_KEYS = ('path', 'image', 'file', 'output', 'output_path')


@dataclass(frozen=True)
class CandidateInfo:
    index: int  # 0-based, best first
    path: Path
    score: float | None
    seed: int | None


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


def _path_of(entry: dict[str, Any]) -> str | None:
    for key in _PATH_KEYS:
        if isinstance(entry.get(key), str):
            return entry[key]
    return None


def candidates(job: Job, data_dir: Path) -> list[CandidateInfo]:
    """An imagine job's candidates, best first."""
    if job.kind != IMAGINE or not job.result:
        return []
    out = []
    for position, entry in enumerate(job.result.get('candidates') or []):
        index = int(entry.get('index', position))
        path = resolve(data_dir, job.id, _path_of(entry)) or data_dir / 'images' / str(job.id) / f'candidate-{index + 1}.png'
        out.append(CandidateInfo(index, path, entry.get('score'), entry.get('seed')))
    return sorted(out, key=lambda c: c.index)


def candidate(job: Job, index: int, data_dir: Path) -> CandidateInfo | None:
    return next((c for c in candidates(job, data_dir) if c.index == index), None)


def grid_path(job: Job, data_dir: Path) -> Path:
    result = job.result or {}
    value = result.get('grid') or result.get('grid_path')
    return (
        resolve(data_dir, job.id, value if isinstance(value, str) else None)
        or data_dir / 'images' / str(job.id) / 'grid.png'
    )


def expanded_path(job: Job, data_dir: Path) -> Path | None:
    if job.kind != EXPAND or not job.result:
        return None
    return resolve(data_dir, job.id, _path_of(job.result))


def prompt_of(job: Job) -> str:
    """The prompt as the member typed it (an expand without its own prompt uses its parent's)."""
    return str((job.payload or {}).get('prompt') or (job.result or {}).get('prompt') or '')


def was_truncated(job: Job) -> bool:
    return bool((job.result or {}).get('truncated'))
