"""A picture's token grid for the sampling edits (vary, repaint by tokens), and putting redrawn cells back into it.

Both edits keep part of a 256 × 256 picture's 16 × 16 VQGAN token grid, force it, and let DalleBart sample
the rest. They need that grid: a candidate carries it (`Picture.tokens`); any other 256 × 256 picture (a
region repainted by CLIP, …) is encoded with the VQGAN (the nearest code of each 16 × 16-pixel block), which
draws it close to, not exactly as, it was.

The VQGAN decoder moves every pixel a little (its attention and GroupNorm see the whole grid), so a decode
of the new grid is not the source picture even where the tokens are the same. The edited picture is
therefore the source with only the changed cells taken from a decode, feathered into it over one token
(`expander.seams.region_alpha`, as the CLIP repaint does): pixels beyond that band are the source's, bit
for bit. Only a window around the changed cells is decoded (`Canvas.decode_windows`: their bounding box and
four tokens of context), which is also what makes a subtle variation cheap: its window is half the grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edalle.operations.base import PICTURE_SIDE, Picture, RequestError
from edalle.operations.imagine import Knobs

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from edalle.expander.canvas import Canvas

GRID_SIDE = 16  # tokens per side of a 256 × 256 picture
CONTEXT_TOKENS = 4  # tokens decoded around the changed cells (the expander's repaint window)


def check_square(width: object, height: object, what: str, otherwise: str = '') -> None:
    """Refuse a picture that is not 256 × 256 (its size as a request carries it), in the member's words."""
    if not isinstance(width, int) or not isinstance(height, int):
        raise RequestError(f'Say which picture to {what}: its size is missing.')
    if (width, height) != (PICTURE_SIDE, PICTURE_SIDE):
        raise RequestError(
            f'I can {what} only 256×256 pictures (a candidate, or a picture made from one); '
            f'this one is {width}×{height}.{otherwise}'
        )


def knobs_of(picture: Picture | None) -> Knobs:
    """The knobs a picture was drawn with (`Picture.knobs`), for drawing more of it; defaults where it has none."""
    if picture is None or not picture.knobs:
        return Knobs()
    try:
        return Knobs.of(picture.knobs)
    except TypeError:  # a result written by another version: its knobs are not ours
        return Knobs()


def kept_canvas(changed: np.ndarray, kind: str, label: str) -> Canvas:
    """The canvas of an edit of a 256 × 256 picture whose `changed` (16, 16) bool cells are redrawn."""
    from edalle.expander.canvas import Canvas, rects_from_mask

    side = changed.shape
    return Canvas(kind, side, (0, 0, side[0], side[1]), rects_from_mask(changed), label)


def tokens_of(engine: Any, picture: Picture | None, image: Image.Image) -> np.ndarray:
    """The (16, 16) token grid of a 256 × 256 picture: its own where it was drawn from tokens, else the VQGAN's
    encoding of its pixels (nearest codes)."""
    import numpy as np
    import torch

    if picture is not None and picture.tokens is not None:
        tokens = np.asarray(picture.tokens, dtype=np.int32)
        if tokens.shape == (GRID_SIDE, GRID_SIDE):
            return tokens
    pixels = pixels_of([image]).to(engine.device)
    with torch.inference_mode():
        _, indices = engine.vqgan.quantize(engine.vqgan.encode(pixels.to(engine.vqgan.codebook.dtype)))
    return indices[0].cpu().numpy().astype(np.int32)


def pixels_of(images: list[Image.Image]) -> torch.Tensor:
    """PIL RGB images → (B, 3, H, W) float32 in [0, 1] on the CPU (k / 255 exactly, so they round back)."""
    from edalle.models.clip import pixels_from_images

    return pixels_from_images(images)


def redraw(engine: Any, tokens: np.ndarray, source: Image.Image, canvas: Canvas) -> list[Image.Image]:
    """(B, 16, 16) token grids → B pictures: `source` with the canvas's free cells (and their one-token feather
    band) taken from a decode of the window around them; every other pixel is the source's, bit for bit."""
    import numpy as np
    import torch

    from edalle.expander.geometry import TOKEN_PX
    from edalle.expander.images import to_images
    from edalle.expander.seams import blend_region, region_alpha

    ((top, left, bottom, right),) = canvas.decode_windows(CONTEXT_TOKENS)
    decoded = engine.decode(np.ascontiguousarray(tokens[:, top:bottom, left:right]))  # (B, 3, h, w) in [0, 1]
    base = pixels_of([source]).to(decoded.device)  # (1, 3, 256, 256)
    whole = base.repeat(len(tokens), 1, 1, 1)
    whole[..., top * TOKEN_PX : bottom * TOKEN_PX, left * TOKEN_PX : right * TOKEN_PX] = decoded
    with torch.inference_mode():
        blended = blend_region(whole, base, region_alpha(canvas, decoded.device))
    return to_images(blended)
