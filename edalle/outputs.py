"""Files a job writes, so no reader ever sees half a file: atomic writes, run folders, imagine manifests.

Each run of a job writes into its own folder, `<data dir>/images/<job id>/<attempt>/` (`RunFolder`). A
worker whose lease was taken over (it stalled, another worker re-ran the job) may still finish and write;
with a folder per attempt it can only ever touch its own files, and deletes them when the store fences its
`complete` off. Every file is written to a temporary name and renamed (`write_atomic`). Paths in result
summaries are relative to the data dir, so the data dir can move.

An imagine result on disk (the CLI and the worker write the same layout, `edalle.operations.imagine`):

    candidate-1.png … candidate-9.png   ranked best-first (1 = highest CLIP score)
    grid.png                            the 3 × 3 grid with rank numbers drawn on it
    manifest.json                       prompt, seeds, 16 × 16 token grids, scores, timings
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

MANIFEST_NAME = 'manifest.json'
PREVIEW_NAME = 'preview.png'


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to `path` through a temporary file in the same directory and a rename.

    The temporary file is opened with mode 0o666 like any new file, so the user's umask decides who may
    read the result (`tempfile.mkstemp` would make every output 0600, unreadable to a web server or a
    second user sharing the data dir).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f'.{path.name}.{secrets.token_hex(4)}.tmp'
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # another writer's temporary name: draw again
            continue
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


def save_png(image: Image.Image, path: Path) -> None:
    write_atomic(path, png_bytes(image))


@dataclass(frozen=True)
class RunFolder:
    """The folder one attempt of one job writes into."""

    data_dir: Path
    job_id: int
    attempt: int

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


def write_preview(folders: list[RunFolder], image: Image.Image) -> list[str]:
    """Write one preview picture into each folder (encoded once); returns the relative paths."""
    data = png_bytes(image)
    paths = []
    for folder in folders:
        write_atomic(folder.file(PREVIEW_NAME), data)
        paths.append(folder.rel(PREVIEW_NAME))
    return paths


def candidate_filename(rank: int) -> str:
    """Rank is 1-based, as members see it."""
    return f'candidate-{rank}.png'


def manifest_json(manifest: dict[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line: a token grid reads as 16 rows."""
    text = json.dumps(manifest, indent=1)
    return re.sub(r'\[\s*(-?\d[\d\s,.-]*?)\s*\]', lambda m: '[' + re.sub(r'\s+', ' ', m.group(1)) + ']', text)


@dataclass(frozen=True)
class StoredCandidate:
    """A candidate read back from disk: what an expand needs to start from it."""

    image: Image.Image
    tokens: np.ndarray  # (16, 16)
    prompt: str
    seed: int
    score: float
    rank: int


def read_candidate(manifest_path: Path, rank: int) -> StoredCandidate:
    """Candidate `rank` (1-based) of the imagine result whose manifest is at `manifest_path`."""
    import numpy as np
    from PIL import Image

    if manifest_path.is_dir():
        manifest_path = manifest_path / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f'No imagine manifest at {manifest_path}.') from None
    except ValueError:
        raise ValueError(f'{manifest_path} is not a readable manifest (broken JSON).') from None
    candidates = manifest.get('candidates') or []
    if not 1 <= rank <= len(candidates):
        raise ValueError(f'That result has candidates 1 to {len(candidates)}; there is no candidate {rank}.')
    entry = candidates[rank - 1]
    with Image.open(manifest_path.parent / entry['file']) as image:
        picture = image.convert('RGB')
    return StoredCandidate(
        image=picture,
        tokens=np.asarray(entry['tokens'], dtype=np.int32),
        prompt=manifest.get('prompt', ''),
        seed=int(entry['seed']),
        score=float(entry['score']),
        rank=rank,
    )
