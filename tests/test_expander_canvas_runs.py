"""Optimising canvases with the tiny VQGAN and CLIP: zoom, pan, square, repaint, dream, frames, and ratios unchanged.

Loops run one or two steps, most on small sources; the product's own sizes (a 256-px source zoomed
to 512, panned twice, a 448×256 picture made square) take a second or two each on a quiet 2-core CPU.
"""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from edalle.config import VQGAN_CONFIGS
from edalle.expander import default
from edalle.expander.api import CanvasRequest, ExpandRequest, expand, expand_batch, prepare_canvas, run, run_batch
from edalle.expander.canvas import (
    canvas_for_dream,
    canvas_for_pan,
    canvas_for_ratio,
    canvas_for_refine,
    canvas_for_region,
    canvas_for_square,
    canvas_for_zoom,
)
from edalle.expander.default import CanvasItem, DefaultSettings, run_canvas
from edalle.expander.errors import ExpandError
from edalle.expander.frames import to_frame_pixels
from edalle.expander.geometry import compute_geometry
from edalle.expander.images import to_images, to_pixels
from edalle.expander.losses import negative_hinge
from edalle.expander.seams import region_alpha
from edalle.models.clip import ClipModel
from edalle.models.vqgan import VQGAN

REPO = Path(__file__).resolve().parents[1]
BEFORE_CANVAS = '558c039'  # the last commit before the canvas: ratio expansions must give what it gave
QUICK = DefaultSettings(steps=2, cutn=2, image_views=2)
FIXED_VIEWS = DefaultSettings(steps=8, cutn=4, image_views=2, lr=0.6, lr_final=0.6, fresh_views=False)


@pytest.fixture(scope='module')
def models() -> tuple[VQGAN, ClipModel]:
    return VQGAN.random(VQGAN_CONFIGS['tiny'], 0), ClipModel.build_tiny(0)


def _candidate(vqgan: VQGAN, rows: int, columns: int | None = None, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """A 'generated' picture: random tokens and their decode, as the imagine job stores them."""
    tokens = np.random.RandomState(seed).randint(0, vqgan.codebook.shape[0], (rows, columns or rows))
    with torch.no_grad():
        image = to_images(vqgan.decode_tokens(torch.as_tensor(tokens)[None]))[0]
    return image, tokens


def _box(array: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return array[top:bottom, left:right]


# ----------------------------------------------------------------------------------------------- ratios unchanged


def _old_expander(root: Path) -> ModuleType:
    """The expander package as it was at BEFORE_CANVAS, read from this repository's history and imported apart.

    Why not a committed reference array: the loop's floats depend on the CPU's kernels (the
    codebook search turns a last-bit difference into another code), so an array saved on one
    machine is not bit-exact on another; the old code run here, beside the new, compares like
    with like on whatever machine runs the test.
    """
    name = f'expander_{BEFORE_CANVAS}'
    try:
        listing = subprocess.run(
            ['git', '-C', str(REPO), 'ls-tree', '--name-only', BEFORE_CANVAS, 'edalle/expander/'],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f'this checkout has no git history with commit {BEFORE_CANVAS} (a shallow clone?)')
    package = root / name
    package.mkdir()
    for path in listing:
        show = ['git', '-C', str(REPO), 'show', f'{BEFORE_CANVAS}:{path}']
        text = subprocess.run(show, check=True, capture_output=True, text=True).stdout
        (package / Path(path).name).write_text(text.replace('edalle.expander.', f'{name}.'))
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(f'{name}.api')
    finally:
        sys.path.remove(str(root))


@pytest.fixture(scope='module')
def old_expander(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return _old_expander(tmp_path_factory.mktemp('before-canvas'))


def test_ratio_runs_are_bit_for_bit_what_they_were(models: tuple[VQGAN, ClipModel], old_expander: ModuleType) -> None:
    """`run_default` on small sources, wide and tall, with tokens and without, in a batch: images, losses, latents."""
    vqgan, clip = models
    old_default = importlib.import_module(old_expander.__name__.replace('.api', '.default'))
    old_geometry = importlib.import_module(old_expander.__name__.replace('.api', '.geometry'))
    (a, tokens_a), (b, tokens_b) = _candidate(vqgan, 8, seed=1), _candidate(vqgan, 8, seed=2)
    for ratio, tokens in (('16:9', (tokens_a, None)), ('9:16', (None, tokens_b))):
        latents: dict[str, list[torch.Tensor]] = {'old': [], 'new': []}
        runs = {}
        for name, module, geometry in (
            ('old', old_default, old_geometry.compute_geometry(ratio, (8, 8))),
            ('new', default, compute_geometry(ratio, (8, 8))),
        ):
            items = [module.DefaultItem(a, tokens[0], 'a harbour', 3), module.DefaultItem(b, tokens[1], 'a forest', 4)]
            settings = module.DefaultSettings(steps=2, cutn=4, image_views=2)
            seen = latents[name]
            record = seen.append
            runs[name] = module.run_default(vqgan, clip, items, geometry, settings, observer=lambda s, z, r=record: r(z))
        for x, y in zip(runs['old'].images, runs['new'].images, strict=True):
            assert np.array_equal(np.asarray(x), np.asarray(y)), ratio
        assert runs['old'].losses == runs['new'].losses
        assert all(torch.equal(x, y) for x, y in zip(latents['old'], latents['new'], strict=True))


@pytest.mark.slow
def test_16_9_expansions_are_bit_for_bit_what_they_were(models: tuple[VQGAN, ClipModel], old_expander: ModuleType) -> None:
    """Through the API, as the worker calls it: two 256-px candidates, one with its tokens and one re-encoded."""
    vqgan, clip = models
    (a, tokens_a), (b, _) = _candidate(vqgan, 16, seed=1), _candidate(vqgan, 16, seed=2)
    requests = [
        dict(source_image=a, prompt='a harbour', ratio='16:9', source_tokens=tokens_a, seed=3, steps=2, cutouts=3),
        dict(source_image=b, prompt='', ratio='16:9', seed=4, steps=2, cutouts=3),
    ]
    before = old_expander.expand_batch(vqgan, clip, [old_expander.ExpandRequest(**r) for r in requests])
    after = expand_batch(vqgan, clip, [ExpandRequest(**r) for r in requests])
    for x, y in zip(before, after, strict=True):
        assert np.array_equal(np.asarray(x.image), np.asarray(y.image))
        assert x.losses == y.losses and x.seed == y.seed
        assert {k: v for k, v in y.settings.items() if k in x.settings} == x.settings  # what results recorded, kept


def test_classic_still_expands_through_the_api(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    image, _ = _candidate(vqgan, 4)
    result = expand(vqgan, clip, ExpandRequest(image, 'a lake', '2:1', steps=1, seed=1, method='classic', cutouts=2))
    assert result.image.size == (128, 64) and result.settings['method'] == 'classic'
    with pytest.raises(ExpandError, match='classic method only widens'):
        prepare_canvas(CanvasRequest(canvas_for_zoom((64, 64), 2), image, method='classic'))


# ----------------------------------------------------------------------------------------------- extend canvases


def test_zoom_keeps_fixed_latents_and_the_centre(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    image, tokens = _candidate(vqgan, 4)
    canvas = canvas_for_zoom((64, 64), 2.0)  # 8 × 8 tokens, the source at 2 … 6
    exact = vqgan.embed_tokens(torch.as_tensor(tokens)[None]).detach()
    seen: list[torch.Tensor] = []
    item = CanvasItem(image, tokens, 'a harbour', 1)
    out = run_canvas(vqgan, clip, [item], canvas, QUICK, observer=lambda s, z: seen.append(z.clone()))
    assert len(seen) == QUICK.steps
    for z in seen:
        assert torch.equal(z[..., 2:6, 2:6], exact)  # the fixed latents never change
    assert not torch.equal(seen[0][..., :2, :], seen[1][..., :2, :])  # the ring does
    result = np.asarray(out.images[0])
    assert result.shape == (128, 128, 3)
    assert np.array_equal(result[32:96, 32:96], np.asarray(image))
    assert out.tokens[0].shape == (8, 8) and np.array_equal(out.tokens[0][2:6, 2:6], tokens)


def test_zoom_batch_items_are_independent(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    (a, ta), (b, tb) = _candidate(vqgan, 4, seed=1), _candidate(vqgan, 4, seed=2)
    canvas = canvas_for_zoom((64, 64), 1.5)
    items = [CanvasItem(a, ta, 'a harbour', 3), CanvasItem(b, tb, 'a forest', 4)]
    settings = DefaultSettings(steps=1, cutn=2, image_views=2)
    batch = run_canvas(vqgan, clip, items, canvas, settings)
    alone = run_canvas(vqgan, clip, items[1:], canvas, settings)
    # not bit-equal: batched convolutions round differently (see test_expander_default); a leak is far larger
    assert batch.losses[1][0] == pytest.approx(alone.losses[0][0], abs=1e-3)


def test_zoom_2x_of_a_256_candidate(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    image, tokens = _candidate(vqgan, 16)
    canvas = canvas_for_zoom(image.size, 2.0)
    result = run(vqgan, clip, CanvasRequest(canvas, image, tokens, 'a harbour', steps=1, seed=2, cutouts=2))
    assert result.image.size == (512, 512)
    assert np.array_equal(np.asarray(result.image)[128:384, 128:384], np.asarray(image))
    assert result.settings['canvas'] == 'zoom' and result.settings['source'] == 'tokens'


def test_pan_right_twice_keeps_what_was_there(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    image, tokens = _candidate(vqgan, 16)
    once = dict(prompt='a harbour', steps=1, cutouts=2)
    first = run(vqgan, clip, CanvasRequest(canvas_for_pan(image.size, 'right'), image, tokens, seed=2, **once))
    assert first.image.size == (384, 256)
    assert np.array_equal(np.asarray(first.image)[:, :256], np.asarray(image))
    second = run(vqgan, clip, CanvasRequest(canvas_for_pan(first.image.size, 'right'), first.image, seed=3, **once))
    assert second.image.size == (512, 256)
    assert np.array_equal(np.asarray(second.image)[:, :384], np.asarray(first.image))
    assert second.settings['source'] == 'pixels'


def test_square_of_a_widened_picture(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    wide, tokens = _candidate(vqgan, 16, 28)  # 448 × 256, as a 16:9 expansion gives
    canvas = canvas_for_square(wide.size)
    result = run(vqgan, clip, CanvasRequest(canvas, wide, tokens, 'a harbour', steps=1, seed=2, cutouts=2))
    assert result.image.size == (448, 448)
    assert np.array_equal(np.asarray(result.image)[96:352], np.asarray(wide))


def test_small_pan_and_square_keep_the_source(models: tuple[VQGAN, ClipModel]) -> None:
    """The same properties as the slow tests, on 4-token sources."""
    vqgan, clip = models
    image, tokens = _candidate(vqgan, 4, 6)
    for canvas in (canvas_for_pan(image.size, 'right'), canvas_for_pan(image.size, 'up'), canvas_for_square(image.size)):
        out = run_canvas(vqgan, clip, [CanvasItem(image, tokens, 'a harbour', 1)], canvas, QUICK)
        assert out.images[0].size == canvas.size
        assert np.array_equal(_box(np.asarray(out.images[0]), canvas.source_box), np.asarray(image)), canvas


def test_zoom_at_the_limit_scales_the_picture_down(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    image, tokens = _candidate(vqgan, 8)  # 128 × 128, at a 128-px limit
    canvas = canvas_for_zoom(image.size, 2.0, max_canvas_px=128)
    assert canvas.source_scale == 0.5
    prepared = prepare_canvas(CanvasRequest(canvas, image, tokens, 'x'))
    assert prepared.source.size == (64, 64) and prepared.tokens is None  # the tokens were for the big picture
    result = run(vqgan, clip, CanvasRequest(canvas, image, tokens, 'a harbour', steps=1, seed=1, cutouts=2))
    assert result.image.size == (128, 128) and result.settings['source_scale'] == 0.5
    assert np.array_equal(np.asarray(result.image)[32:96, 32:96], np.asarray(prepared.source))


# ----------------------------------------------------------------------------------------------- repaint


def test_repaint_changes_only_the_region(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    image, tokens = _candidate(vqgan, 8)
    canvas = canvas_for_region(image.size, 'A1')  # tokens 0–3 of an 8 × 8 picture
    exact = vqgan.embed_tokens(torch.as_tensor(tokens)[None]).detach()
    free = torch.as_tensor(canvas.free_mask())[None, None].expand_as(exact)
    for init in ('edit', 'remove'):
        seen: list[torch.Tensor] = []
        item = CanvasItem(image, tokens, 'a red boat', 1, init=init)
        out = run_canvas(vqgan, clip, [item], canvas, QUICK, observer=lambda s, z, seen=seen: seen.append(z.clone()))
        for z in seen:
            assert torch.equal(z[~free], exact[~free])  # latents outside the region never change
        result, source = np.asarray(out.images[0]), np.asarray(image)
        beyond = (region_alpha(canvas) == 0).numpy()
        assert np.array_equal(result[beyond], source[beyond])  # pixels beyond the one-token feather band
        assert beyond[80:].all() and beyond[:, 80:].all() and not beyond[:64, :64].any()
    assert not np.array_equal(result[:64, :64], source[:64, :64])


def test_repaint_loss_falls_on_fixed_views(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    image, tokens = _candidate(vqgan, 8)
    canvas = canvas_for_region(image.size, 'A1:A2')
    item = CanvasItem(image, tokens, 'a painting of farmland', 1, init='remove')
    losses = run_canvas(vqgan, clip, [item], canvas, FIXED_VIEWS).losses[0]
    # From the blurred fill: from the original ('edit') the seam term starts at its minimum, and random
    # weights give the text term too little pull to beat it in a few steps.
    assert losses[-1] < losses[0] and min(losses[1:]) < losses[0] - 0.01


# ----------------------------------------------------------------------------------------------- dream


def test_dream_size_determinism_and_falling_loss(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    canvas = canvas_for_dream('2:1', short_px=64)
    runs = [run_canvas(vqgan, clip, [CanvasItem(None, None, 'a lighthouse', seed)], canvas, QUICK) for seed in (5, 5, 6)]
    assert runs[0].images[0].size == (128, 64)
    assert np.array_equal(np.asarray(runs[0].images[0]), np.asarray(runs[1].images[0]))
    assert runs[0].losses == runs[1].losses and runs[0].losses != runs[2].losses
    falling = run_canvas(vqgan, clip, [CanvasItem(None, None, 'a painting of farmland', 2)], canvas, FIXED_VIEWS)
    losses = falling.losses[0]
    assert losses[-1] < losses[0] and min(losses[1:]) < losses[0] - 0.01


def test_dream_starts_and_refine(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    canvas = canvas_for_dream('1:1', short_px=64)
    starts = {}
    for init in ('random', 'grey', 'noise'):
        item = CanvasItem(None, None, 'a lighthouse', 1, 'a boat', init)
        out = run_canvas(vqgan, clip, [item], canvas, DefaultSettings(steps=1, cutn=2), record_every=1)
        starts[init] = out.frames[0][0].image
    assert not np.array_equal(starts['random'], starts['grey']) and not np.array_equal(starts['grey'], starts['noise'])
    image, tokens = _candidate(vqgan, 4)
    refine = canvas_for_refine(image.size)
    seen: list[torch.Tensor] = []
    item = CanvasItem(image, tokens, 'a lighthouse', 1)
    run_canvas(vqgan, clip, [item], refine, QUICK, observer=lambda s, z: seen.append(z))
    exact = vqgan.embed_tokens(torch.as_tensor(tokens)[None])
    assert (seen[0] - exact).abs().max() < 1.0  # one Adam step (lr 0.3) from the picture's own latents


def test_negative_hinge_is_bounded_and_neutral_when_equal_to_the_prompt() -> None:
    torch.manual_seed(0)
    views = torch.randn(6, 8, requires_grad=True)
    prompt, negative = torch.randn(8), torch.randn(8)
    value = negative_hinge(views, prompt, negative, margin=0.1)
    assert 0 <= float(value.detach()) <= math.pi**2 / 2 + 0.1
    same = negative_hinge(views, prompt, prompt.clone(), margin=0.1)
    (grad,) = torch.autograd.grad(same, views)
    assert float(same.detach()) == pytest.approx(0.1, rel=1e-6) and not grad.any()
    near_prompt = prompt[None].repeat(6, 1) + 0.01 * torch.randn(6, 8)
    assert float(negative_hinge(near_prompt, prompt, negative, margin=0.1)) == 0.0  # far enough already: no push


# ----------------------------------------------------------------------------------------------- frames and the API


def test_frames_every_k_steps_and_the_final_picture_last(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    image, tokens = _candidate(vqgan, 4)
    canvas = canvas_for_pan(image.size, 'right')
    settings = DefaultSettings(steps=4, cutn=2, image_views=2)
    for every in (1, 3):
        out = run_canvas(vqgan, clip, [CanvasItem(image, tokens, 'x', 1)], canvas, settings, record_every=every)
        frames = out.frames[0]
        assert len(frames) == math.ceil(4 / every) + 1
        assert [f.step for f in frames] == [*range(0, 4, every), 4]
        assert np.array_equal(frames[-1].image, np.asarray(out.images[0]))  # exactly the final picture
        assert all(f.image.dtype == np.uint8 and f.image.shape == (64, 96, 3) for f in frames)
    small = run_canvas(vqgan, clip, [CanvasItem(image, tokens, 'x', 1)], canvas, settings, record_every=9, frame_px=48)
    assert [f.step for f in small.frames[0]] == [0, 4]  # k past the steps: the start and the end
    assert small.frames[0][0].image.shape == (32, 48, 3)  # shrunk by 2 to fit 48 px
    expected = to_frame_pixels(to_pixels(small.images[0]), 48)[0].numpy()
    assert np.array_equal(small.frames[0][-1].image, expected)
    assert run_canvas(vqgan, clip, [CanvasItem(image, tokens, 'x', 1)], canvas, QUICK).frames == [[]]


def test_api_refusals() -> None:
    image = Image.new('RGB', (256, 256))
    dream = canvas_for_dream()
    with pytest.raises(ExpandError, match='give a prompt'):
        prepare_canvas(CanvasRequest(dream))
    with pytest.raises(ExpandError, match='refine it instead'):
        prepare_canvas(CanvasRequest(dream, image, prompt='x'))
    with pytest.raises(ExpandError, match='negative prompt needs a prompt'):
        prepare_canvas(CanvasRequest(canvas_for_zoom((256, 256), 2), image, negative_prompt='blurry'))
    with pytest.raises(ExpandError, match='made for 448×256'):
        prepare_canvas(CanvasRequest(canvas_for_square((448, 256)), image))
    with pytest.raises(ExpandError, match='needs a picture'):
        prepare_canvas(CanvasRequest(canvas_for_pan((256, 256), 'left')))
    with pytest.raises(ExpandError, match='16×16 grid'):
        prepare_canvas(CanvasRequest(canvas_for_pan((256, 256), 'left'), image, np.zeros((4, 4), np.int64)))
    with pytest.raises(ExpandError, match='not a way to start'):
        prepare_canvas(CanvasRequest(canvas_for_region((256, 256), 'A1'), image, prompt='x', init='grey'))
    with pytest.raises(ExpandError, match='what the region should show'):
        prepare_canvas(CanvasRequest(canvas_for_region((256, 256), 'A1'), image))
    with pytest.raises(ExpandError, match='every 1 to'):
        prepare_canvas(CanvasRequest(canvas_for_ratio((256, 256), '16:9'), image, record_every=-1))
    ok = prepare_canvas(CanvasRequest(canvas_for_region((256, 256), 'A1'), image, prompt='sea', init='remove', seed=4))
    assert ok.init == 'remove' and ok.seed == 4


def test_run_batch_reports_frames_tokens_and_canvas(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    image, tokens = _candidate(vqgan, 4)
    canvas = canvas_for_pan(image.size, 'down')
    requests = [
        CanvasRequest(canvas, image, tokens, 'a harbour', 'fog', steps=2, seed=1, cutouts=2, record_every=1),
        CanvasRequest(canvas, image, None, 'a forest', steps=2, seed=2, cutouts=2, record_every=1),
    ]
    stages: list[str] = []
    results = run_batch(vqgan, clip, requests, progress=lambda stage, *rest: stages.append(stage))
    assert stages == ['pan', 'pan']
    assert [r.settings['source'] for r in results] == ['tokens', 'pixels']
    assert results[0].settings['negative_prompt'] == 'fog' and 'negative_prompt' not in results[1].settings
    assert results[0].settings['decoded_tokens'] == 4 * 4 + 4 * 2  # the band (2 rows) and 4 rows of context
    for r in results:
        assert r.image.size == (64, 96) and len(r.frames) == 3 and r.tokens.shape == (6, 4)
        assert np.array_equal(r.frames[-1].image, np.asarray(r.image))
    with pytest.raises(ExpandError, match='must share canvas'):
        run_batch(vqgan, clip, [requests[0], CanvasRequest(canvas_for_pan(image.size, 'up'), image, prompt='x')])
