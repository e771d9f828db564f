"""What an imagine result looks like on disk: ranked PNGs, the numbered grid and a manifest.

The CLI and the worker write the same layout, so an expand can start from either:

    candidate-1.png … candidate-9.png   ranked best-first (1 = highest CLIP score)
    grid.png                            the 3 × 3 grid with rank numbers drawn on it
    manifest.json                       prompt, seeds, 16 × 16 token grids, scores, timings

Every file is written to a temporary name and renamed, so a reader (the bot, a second
worker, a crash) never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from edalle.grid import make_grid

if TYPE_CHECKING:
    from edalle.engine import ImagineResult

MANIFEST_NAME = 'manifest.json'
MANIFEST_VERSION = 1


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to `path` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_png(image: Image.Image, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    write_atomic(path, buffer.getvalue())


def candidate_filename(rank: int) -> str:
    """Rank is 1-based, as members see it."""
    return f'candidate-{rank}.png'


def write_imagine_result(result: ImagineResult, directory: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write one imagine result's files and return its manifest (also written)."""
    directory.mkdir(parents=True, exist_ok=True)
    for candidate in result.candidates:
        save_png(candidate.image, directory / candidate_filename(candidate.index + 1))
    save_png(make_grid([c.image for c in result.candidates]), directory / 'grid.png')
    manifest = {
        'version': MANIFEST_VERSION,
        'kind': 'imagine',
        'prompt': result.prompt,
        'normalized_prompt': result.normalized_prompt,
        'truncated': result.truncated,
        'token_count': result.token_count,
        'seed': result.seed,
        'grid': 'grid.png',
        'candidates': [
            {
                'rank': c.index + 1,
                'file': candidate_filename(c.index + 1),
                'seed': c.seed,
                'score': round(c.score, 4),
                'tokens': c.tokens.tolist(),
            }
            for c in result.candidates
        ],
        'timings': {k: round(v, 4) for k, v in result.timings.items()},
        **(extra or {}),
    }
    write_atomic(directory / MANIFEST_NAME, manifest_json(manifest).encode())
    return manifest


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
