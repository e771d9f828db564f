"""repaint_clip (the E-DALL-E method) as an operation: its request and checks, the optimisation on the canvas it
builds (latents outside the region never change, the loss falls on fixed views), and its runner on pictures of
two sizes (pixels beyond the one-token feather band kept bit for bit). Tiny preset: real architectures,
random weights."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from edalle import errors
from edalle.expander.canvas import canvas_for_region
from edalle.expander.default import CanvasItem, DefaultSettings, run_canvas
from edalle.expander.seams import region_alpha
from edalle.jobs import Job, JobStatus, Limits
from edalle.operations import repaint_clip
from edalle.operations.base import RequestError, WorkItem, pictures_of
from edalle.operations.imagine import ImagineRequest
from edalle.operations.repaint_clip import OPERATION
from edalle.outputs import RunFolder, save_png

FIXED_VIEWS = DefaultSettings(steps=6, cutn=4, image_views=2, lr=0.6, lr_final=0.6, fresh_views=False)


def clip_request(**fields: Any) -> Any:
    values = dict(user_id=1, guild_id=2, channel_id=3, parent_job_id=12, parent_index=0, width=256, height=256)
    return repaint_clip.request(**{**values, 'region': 'B2:C3', 'prompt': 'a party hat', 'preset': 'tiny', **fields})


def test_a_request_and_its_checks() -> None:
    request = clip_request(steps=20)
    assert request.kind == 'repaint_clip' and request.payload['init'] == 'edit' and request.compat_key == 'repaint_clip:tiny'
    assert OPERATION.label(request.payload) == 'repaint B2:C3 (CLIP)'
    assert OPERATION.bucket == 'daily_edits' and OPERATION.compute == 'optimising' and not OPERATION.batchable
    OPERATION.check(request.payload, Limits(expand_steps=20))
    OPERATION.check(clip_request(width=448, region='G4').payload, Limits())  # any size: a 448 px picture has A–G
    refusals = [
        (clip_request(steps=21).payload, errors.RequestTooLarge, 'at most 20 optimisation steps'),
        (clip_request(width=448, region='H1').payload, RequestError, 'columns A to G'),
        (clip_request(region='A1:D4').payload, RequestError, 'the whole picture'),
        (clip_request(width=1792, height=1024).payload, RequestError, 'up to 1024 px'),
        (clip_request(init='melt').payload, RequestError, 'edit.*remove'),
        (clip_request(prompt='').payload, RequestError, 'what the region should show'),
    ]
    for payload, refusal, words in refusals:
        with pytest.raises(refusal, match=words):
            OPERATION.check(payload, Limits(expand_steps=20))


@pytest.fixture(scope='module')
def source(tiny_engine: Any) -> Any:
    (grid,) = tiny_engine.imagine([ImagineRequest('a pug on a sofa', n=1, seed=300)])
    return grid.candidates[0]


@pytest.mark.slow
def test_on_its_canvas_outside_latents_never_change_and_the_loss_falls_on_fixed_views(tiny_engine, source) -> None:
    vqgan, clip = tiny_engine.vqgan, tiny_engine.clip
    canvas = canvas_for_region(source.image.size, 'B2:C3')
    exact = vqgan.embed_tokens(torch.as_tensor(source.tokens, dtype=torch.long)[None]).detach()
    free = torch.as_tensor(canvas.free_mask())[None, None].expand_as(exact)
    seen: list[torch.Tensor] = []
    item = CanvasItem(source.image, source.tokens, 'a painting of farmland', 1, init='remove')
    out = run_canvas(vqgan, clip, [item], canvas, FIXED_VIEWS, observer=lambda step, z: seen.append(z.clone()))
    assert len(seen) == FIXED_VIEWS.steps
    for z in seen:
        assert torch.equal(z[~free], exact[~free])  # the latents outside the region never change
    losses = out.losses[0]
    assert losses[-1] < losses[0] and min(losses[1:]) < losses[0] - 0.01
    inside = canvas.free_mask()
    assert np.array_equal(out.tokens[0][~inside], source.tokens[~inside])  # so their tokens are the source's


def job(job_id: int, **fields: Any) -> Job:
    values = {name: None for name in Job.__slots__}  # type: ignore[attr-defined]
    values.update(id=job_id, kind='repaint_clip', status=JobStatus.RUNNING, user_id=1, attempt=1)
    values.update(compat_key='repaint_clip:tiny', cancel_requested=False, **fields)
    return Job(**values)


@pytest.mark.slow
def test_the_runner_repaints_pictures_of_any_size_and_keeps_every_pixel_beyond_the_band(
    tiny_engine, source, tmp_path: Path
) -> None:
    folder = tmp_path / 'images' / '4'
    folder.mkdir(parents=True)
    save_png(source.image, folder / 'pick.png')
    wide = Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 448, 3), np.uint8))
    wide.save(folder / 'wide.png')
    parent = job(
        4, kind='imagine', status=JobStatus.SUCCEEDED, payload={'prompt': 'a pug on a sofa'},
        result={'pictures': [
            {'index': 0, 'path': 'images/4/pick.png', 'tokens': source.tokens.tolist(), 'seed': source.seed},
            {'index': 1, 'path': 'images/4/wide.png', 'width': 448, 'height': 256},
        ]},
    )  # fmt: skip
    stages: list[str] = []
    ctx = SimpleNamespace(
        progress=lambda stage, done, total, preview=None: stages.append(stage),
        should_cancel=lambda: False,
        check_cancel=lambda: None,
    )
    for job_id, index, region, picture in ((7, 0, 'B2:C3', source.image), (8, 1, 'G1,A4', wide)):
        payload = {'region': region, 'prompt': 'a party hat', 'steps': 2, 'seed': 3, 'init': 'edit', 'preset': 'tiny'}
        item = WorkItem(
            job(job_id, payload=payload, parent_job_id=4, parent_index=index), RunFolder(tmp_path, job_id, 1), parent
        )
        (done,) = OPERATION.run(tiny_engine, [item], ctx)
        assert not isinstance(done, errors.RunFailed), done
        (out,) = pictures_of(done)
        assert (out.width, out.height) == picture.size and done['method'] == 'clip' and done['region'] == region
        assert done['settings']['steps'] == 2 and done['seed'] == 3
        with Image.open(tmp_path / out.path) as image:
            result = np.asarray(image.convert('RGB'))
        beyond = (region_alpha(canvas_for_region(picture.size, region)) == 0).numpy()
        assert np.array_equal(result[beyond], np.asarray(picture)[beyond])
        assert not np.array_equal(result[~beyond], np.asarray(picture)[~beyond])
    assert set(stages) == {'repaint'}
