"""Helpers for the optimising operations' tests (zoom, pan, square, dream): claimed jobs, a run context, the tiny
models behind an engine, a parent job with a picture on disk, and the time-lapse read back."""

from __future__ import annotations

import functools
import io
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image, ImageSequence

from edalle.jobs import Job, JobStatus
from edalle.media import TimelapseTiming, gif_final_frame
from edalle.operations.base import WorkItem
from edalle.outputs import RunFolder

VIEWS = 2  # CLIP views per step in these runs (32 by default): the tiny models at a few seconds a run


def job(**fields: Any) -> Job:
    """A job row as the worker reads it (running, attempt 1), with `fields` set."""
    values = {name: None for name in Job.__slots__}  # type: ignore[attr-defined]
    values.update(id=7, kind='zoom', status=JobStatus.RUNNING, user_id=1, attempt=1, compat_key='zoom:tiny')
    values.update(cancel_requested=False, **fields)
    return Job(**values)


def picture_file(data_dir: Path, name: str, size: tuple[int, int], seed: int = 0) -> str:
    """A noisy RGB picture of `size` under `images/`; its path relative to the data dir."""
    (data_dir / 'images' / '4').mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(data_dir / 'images' / '4' / name)
    return f'images/4/{name}'


def parent(data_dir: Path, size: tuple[int, int], prompt: str = 'a quiet harbour', kind: str = 'expand') -> Job:
    """A succeeded job whose one picture (`size`) is on disk."""
    path = picture_file(data_dir, 'p.png', size)
    picture = {'index': 0, 'path': path, 'width': size[0], 'height': size[1], 'seed': 3}
    return job(id=4, kind=kind, status=JobStatus.SUCCEEDED, payload={'prompt': prompt}, result={'pictures': [picture]})


def item(data_dir: Path, payload: dict[str, Any], kind: str, source: Job | None = None, job_id: int = 7) -> WorkItem:
    """A claimed `kind` job with `payload`, starting from picture 0 of `source` (or from nothing)."""
    fields: dict[str, Any] = {'id': job_id, 'kind': kind, 'payload': payload, 'compat_key': f'{kind}:tiny'}
    if source is not None:
        fields.update(parent_job_id=source.id, parent_index=0)
    return WorkItem(job(**fields), RunFolder(data_dir, job_id, 1), source)


class Context:
    """A run context that records progress (stage, done, total, whether a preview came) and never cancels."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, int, int, bool]] = []

    def progress(self, stage: str, done: int, total: int, preview: Any = None) -> None:
        self.reports.append((stage, done, total, preview is not None))

    def should_cancel(self) -> bool:
        return False

    def check_cancel(self) -> None:
        pass


@functools.cache
def tiny_models() -> tuple[Any, Any]:
    from edalle.config import VQGAN_CONFIGS
    from edalle.models.clip import ClipModel
    from edalle.models.vqgan import VQGAN

    return VQGAN.random(VQGAN_CONFIGS['tiny'], 0), ClipModel.build_tiny(0)


def tiny_engine() -> Any:
    """`Engine.run_canvas` on the tiny models (random weights), with `VIEWS` views a step to keep runs short."""
    from edalle.engine import Engine

    vqgan, clip = tiny_models()
    engine = SimpleNamespace(vqgan=vqgan, clip=clip, requests=[], results=[])

    def run_canvas(request: Any, progress: Any = None, should_cancel: Any = None) -> Any:
        engine.requests.append(request)
        result = Engine.run_canvas(engine, replace(request, cutouts=VIEWS), progress, should_cancel)  # type: ignore[arg-type]
        engine.results.append(result)
        return result

    engine.run_canvas = run_canvas
    return engine


def read_picture(data_dir: Path, result: dict[str, Any]) -> np.ndarray:
    (picture,) = result['pictures']
    with Image.open(data_dir / picture['path']) as image:
        assert image.size == (picture['width'], picture['height'])
        return np.asarray(image.convert('RGB'))


def timelapse_frames(data_dir: Path, result: dict[str, Any]) -> tuple[list[np.ndarray], list[int]]:
    """The time-lapse a result names, read back: its frames (RGB) and their durations in ms."""
    path = data_dir / result['media']['timelapse']
    with Image.open(io.BytesIO(path.read_bytes())) as opened:
        assert opened.format == 'GIF'
        frames, durations = [], []
        for frame in ImageSequence.Iterator(opened):
            frames.append(np.asarray(frame.convert('RGB')))
            durations.append(int(frame.info.get('duration', 0)))
    return frames, durations


def assert_timelapse_of(data_dir: Path, result: dict[str, Any], run: Any, steps: int, every: int) -> None:
    """The run kept ⌈steps / every⌉ + 1 frames, the last one the delivered picture; the GIF shows them all, for the
    time `TimelapseTiming` gives them (a frame equal to the one before it is folded into it, its time added: after one
    small step the nearest codes may not have changed yet), and its last frame is exactly the delivered picture as GIF
    quantises a final frame."""
    final = read_picture(data_dir, result)
    assert [frame.step for frame in run.frames] == [*range(0, steps, every), steps]
    assert len(run.frames) == math.ceil(steps / every) + 1 and np.array_equal(run.frames[-1].image, final)
    frames, durations = timelapse_frames(data_dir, result)
    assert 2 <= len(frames) <= len(run.frames)
    assert sum(durations) == sum(TimelapseTiming().durations(len(run.frames)))
    assert durations[-1] == TimelapseTiming().final_hold_ms  # the final picture is held
    expected = np.asarray(gif_final_frame(Image.fromarray(final)).convert('RGB'))
    assert np.array_equal(frames[-1], expected)
