"""The candidate grid and the on-disk layout of an imagine result."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edalle.grid import GAP, grid_shape, make_grid
from edalle.operations.imagine import Candidate, ImagineResult, write_result
from edalle.outputs import read_candidate, write_atomic


def solid(color: tuple[int, int, int], size: int = 32) -> Image.Image:
    return Image.new('RGB', (size, size), color)


@pytest.mark.parametrize(('count', 'shape'), [(1, (1, 1)), (4, (2, 2)), (5, (3, 2)), (9, (3, 3)), (10, (4, 3))])
def test_grid_shape(count: int, shape: tuple[int, int]) -> None:
    assert grid_shape(count) == shape


def test_grid_places_tiles_in_rank_order_with_numbers() -> None:
    colors = [(10 * i, 255 - 10 * i, 100) for i in range(9)]
    grid = make_grid([solid(c, 64) for c in colors])
    assert grid.size == (3 * 64 + 2 * GAP, 3 * 64 + 2 * GAP)
    for i, color in enumerate(colors):
        x, y = (i % 3) * (64 + GAP), (i // 3) * (64 + GAP)
        assert grid.getpixel((x + 60, y + 60)) == color  # far corner: no badge there
        assert grid.getpixel((x + 8, y + 8)) != color  # the number badge sits top-left
    plain = make_grid([solid(c, 64) for c in colors], numbered=False)
    assert plain.getpixel((8, 8)) == colors[0]


def test_grid_refuses_nothing() -> None:
    with pytest.raises(ValueError):
        make_grid([])


def fake_result(n: int = 3) -> ImagineResult:
    rng = np.random.default_rng(0)
    candidates = [
        Candidate(index=i, image=solid((i * 40, 0, 0)), tokens=rng.integers(0, 1024, (16, 16)), score=30.0 - i, seed=7 + i)
        for i in range(n)
    ]
    return ImagineResult('A Prompt!', ' a prompt!', False, 5, 7, candidates, {'sample': 1.5})


def test_imagine_result_round_trips_through_disk(tmp_path) -> None:
    result = fake_result()
    manifest = write_result(result, tmp_path / 'run', extra={'preset': 'tiny'})
    on_disk = json.loads((tmp_path / 'run' / 'manifest.json').read_text())
    assert on_disk == manifest
    assert on_disk['preset'] == 'tiny' and on_disk['seed'] == 7 and on_disk['grid'] == 'grid.png'
    assert [c['rank'] for c in on_disk['candidates']] == [1, 2, 3]
    assert (tmp_path / 'run' / 'grid.png').is_file()
    stored = read_candidate(tmp_path / 'run', 2)
    assert stored.prompt == 'A Prompt!' and stored.seed == 8 and stored.rank == 2
    assert np.array_equal(stored.tokens, result.candidates[1].tokens)
    assert stored.image.getpixel((0, 0)) == (40, 0, 0)


def test_read_candidate_errors_are_clear(tmp_path) -> None:
    write_result(fake_result(), tmp_path)
    with pytest.raises(ValueError, match='candidates 1 to 3'):
        read_candidate(tmp_path / 'manifest.json', 4)
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'manifest.json').write_text('{nope')
    with pytest.raises(ValueError, match='broken JSON'):
        read_candidate(tmp_path / 'broken', 1)
    with pytest.raises(FileNotFoundError, match='No imagine manifest'):
        read_candidate(tmp_path / 'absent', 1)


def test_write_atomic_leaves_no_temporary_files(tmp_path) -> None:
    write_atomic(tmp_path / 'a' / 'f.bin', b'123')
    assert (tmp_path / 'a' / 'f.bin').read_bytes() == b'123'
    assert [p.name for p in (tmp_path / 'a').iterdir()] == ['f.bin']
