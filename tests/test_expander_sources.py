"""Sources: picture files checked before decoding, manifests' candidates, and clear errors."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edalle.expander import sources
from edalle.expander.errors import SourceError
from edalle.expander.sources import load_image_bytes, load_image_file, load_source


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


def _with_declared_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite the IHDR of a PNG to claim another size (a decompression bomb's header), CRC fixed."""
    ihdr = bytearray(png[16:29])  # width, height, depth, colour type, compression, filter, interlace
    ihdr[0:8] = struct.pack('>II', width, height)
    crc = struct.pack('>I', zlib.crc32(b'IHDR' + bytes(ihdr)) & 0xFFFFFFFF)
    return png[:16] + bytes(ihdr) + crc + png[33:]


@pytest.mark.parametrize('fmt', ['PNG', 'JPEG', 'WEBP'])
def test_formats_are_fitted_to_256(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f'picture.{fmt.lower()}'
    Image.new('RGB', (400, 300), (10, 200, 30)).save(path, format=fmt)
    image = load_image_file(path)
    assert image.size == (256, 256) and image.mode == 'RGB'
    assert np.abs(np.asarray(image).astype(int) - [10, 200, 30]).max() < 8


def test_alpha_is_flattened_onto_white_and_crop_is_central() -> None:
    pixels = np.zeros((100, 300, 4), np.uint8)  # transparent left and right thirds, opaque red middle
    pixels[:, 100:200] = (255, 0, 0, 255)
    image = load_image_bytes(_png_bytes(Image.fromarray(pixels, 'RGBA')))
    assert image.size == (256, 256)
    assert tuple(np.asarray(image)[128, 128]) == (255, 0, 0)
    flat = load_image_bytes(_png_bytes(Image.new('LA', (64, 64), (0, 0))))
    assert tuple(np.asarray(flat)[5, 5]) == (255, 255, 255)


def test_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = _with_declared_size(_png_bytes(Image.new('RGB', (8, 8))), 30_000, 30_000)
    with pytest.raises(SourceError, match='MP'):
        load_image_bytes(bomb)
    big = _with_declared_size(_png_bytes(Image.new('RGB', (8, 8))), 8000, 6000)  # 48 MP: under PIL's own limit
    with pytest.raises(SourceError, match='8000×6000'):
        load_image_bytes(big)


def test_truncated_broken_and_non_images(tmp_path: Path) -> None:
    png = _png_bytes(Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3)).astype(np.uint8)))
    with pytest.raises(SourceError, match='truncated'):
        load_image_bytes(png[: len(png) // 2])
    with pytest.raises(SourceError, match='not a picture'):
        load_image_bytes(b'hello, this is text and not a picture')
    gif = io.BytesIO()
    Image.new('RGB', (8, 8)).save(gif, format='GIF')
    with pytest.raises(SourceError, match='GIF'):
        load_image_bytes(gif.getvalue())
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    with pytest.raises(SourceError, match='empty'):
        load_image_file(empty)
    with pytest.raises(SourceError, match='No picture file'):
        load_image_file(tmp_path / 'missing.png')


def test_file_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, 'MAX_FILE_BYTES', 1000)
    path = tmp_path / 'big.png'
    path.write_bytes(_png_bytes(Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3)).astype(np.uint8))))
    with pytest.raises(SourceError, match='limit'):
        load_image_file(path)


def _manifest(directory: Path, preset: str = 'tiny') -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (256, 256), (1, 2, 3)).save(directory / 'candidate-1.png')
    manifest = {
        'version': 1,
        'kind': 'imagine',
        'prompt': 'a lighthouse in a storm',
        'preset': preset,
        'candidates': [{'rank': 1, 'file': 'candidate-1.png', 'seed': 4, 'score': 30.0, 'tokens': [[7] * 16] * 16}],
    }
    (directory / 'manifest.json').write_text(json.dumps(manifest))
    return directory / 'manifest.json'


def test_manifest_candidate(tmp_path: Path) -> None:
    path = _manifest(tmp_path / 'job')
    for where in (path, path.parent):
        source = load_source(where, 1)
        assert source.prompt == 'a lighthouse in a storm' and source.preset == 'tiny'
        assert source.tokens is not None and source.tokens.shape == (16, 16) and int(source.tokens[0, 0]) == 7
        assert source.image.size == (256, 256)
    with pytest.raises(SourceError, match='candidates 1 to 1'):
        load_source(path, 2)
    (tmp_path / 'bad.json').write_text('{not json')
    with pytest.raises(SourceError, match='broken JSON'):
        load_source(tmp_path / 'bad.json', 1)
    with pytest.raises(SourceError, match='No imagine manifest'):
        load_source(tmp_path / 'nothing' / 'manifest.json', 1)


@pytest.mark.parametrize(
    ('size', 'fitted'),
    [
        ((400, 300), (336, 256)),  # 341.3 → 21 tokens: the short side 256, the aspect kept to a token
        ((300, 400), (256, 336)),
        ((256, 256), (256, 256)),
        ((1000, 250), (1024, 256)),  # 4:1 exactly: the long side at the cap
        ((3000, 300), (1024, 96)),  # 10:1: the long side capped, the short side shorter (102.4 → 6 tokens)
        ((64, 48), (336, 256)),  # small pictures are enlarged
    ],
)
def test_fit_picture_keeps_the_aspect_in_whole_tokens(size: tuple[int, int], fitted: tuple[int, int]) -> None:
    image = sources.fit_picture(Image.new('RGB', size, (10, 200, 30)))
    assert image.size == fitted and image.mode == 'RGB'
    assert sources.fit_picture(Image.new('RGB', (2000, 400)), max_long_px=512).size == (512, 96)


def test_keep_aspect_loading(tmp_path: Path) -> None:
    path = tmp_path / 'wide.png'
    Image.new('RGBA', (800, 450), (255, 0, 0, 0)).save(path)
    kept = load_image_file(path, keep_aspect=True)
    assert kept.size == (448, 256) and tuple(np.asarray(kept)[5, 5]) == (255, 255, 255)  # alpha onto white
    assert load_image_file(path).size == (256, 256)  # the default is still the square
    assert load_source(path, keep_aspect=True).image.size == (448, 256)
