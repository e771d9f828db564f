"""Where a job's files go, and writing them so no reader ever sees half a file.

Each run of a job writes into its own folder, `<data dir>/images/<job id>/<attempt>/`. A worker whose
lease was taken over (it stalled, another worker re-ran the job) may still finish and write; with a
folder per attempt it can only ever touch its own files, and deletes them when the store fences its
`complete` off. Every file is written to a temporary name and renamed (`edalle.outputs.write_atomic`).
Paths in result summaries are relative to the data dir, so the data dir can move.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edalle.outputs import write_atomic

if TYPE_CHECKING:
    from PIL import Image

    from edalle.jobs import Job

PREVIEW_NAME = 'preview.png'


@dataclass(frozen=True)
class RunFolder:
    """The folder one attempt of one job writes into."""

    data_dir: Path
    job_id: int
    attempt: int

    @classmethod
    def of(cls, data_dir: Path, job: Job) -> RunFolder:
        return cls(data_dir, job.id, job.attempt)

    @property
    def relative(self) -> Path:
        return Path('images') / str(self.job_id) / str(self.attempt)

    @property
    def path(self) -> Path:
        return self.data_dir / self.relative

    def file(self, name: str) -> Path:
        """An absolute path for `name` in this folder (created on demand)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path / name

    def rel(self, path: Path | str) -> str:
        """`path` (absolute, or a name in this folder) relative to the data dir, as result summaries store it."""
        path = Path(path)
        if not path.is_absolute():
            path = self.path / path
        return path.relative_to(self.data_dir).as_posix()

    def discard(self) -> None:
        """Remove this attempt's files (a lost lease, a cancel, a failure). Never touches other attempts."""
        shutil.rmtree(self.path, ignore_errors=True)

    def discard_other_attempts(self) -> None:
        """After this attempt succeeded: remove what earlier attempts (workers that died) left behind."""
        for other in self.path.parent.iterdir():
            if other.is_dir() and other.name.isdigit() and other.name != str(self.attempt):
                shutil.rmtree(other, ignore_errors=True)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


def write_preview(folders: list[RunFolder], image: Image.Image) -> list[str]:
    """Write one preview picture into each folder (encoded once); returns the relative paths."""
    data = png_bytes(image)
    paths = []
    for folder in folders:
        write_atomic(folder.file(PREVIEW_NAME), data)
        paths.append(folder.rel(PREVIEW_NAME))
    return paths
