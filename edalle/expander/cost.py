"""How long a canvas will take, before it is queued: seconds per step from the decoded area and the number of views.

A default-method step is, by cost: CLIP forward and backward over the views, the decoder forward
and backward over the canvas's decode windows (`Canvas.decode_windows`), and a little of the rest
(resampling the views, the losses, Adam, the nearest-code search). So per step

    seconds ≈ fixed + batch · (Σ_windows (per_token · n + per_pair · n²) + per_view · views)

where n is a window's token count (n² for the decoder's global attention over the window). Every
view is counted as going backward; the views that read only kept pixels go forward only, so the
estimate runs a few per cent high on a ratio or a pan (about a fifth of their views). Pure Python:
the bot can show an ETA without torch. `fit_step_costs` fits the coefficients to measured steps
(`CanvasResult.timings['per_step']`, `settings['decoded_tokens']`), e.g. for a GPU, which
`bench/expansion.py --canvas` has not been run on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edalle.expander.canvas import Canvas, rect_area

CONTEXT_TOKENS = 4  # DefaultSettings.context_tokens
VIEWS = 32  # DefaultSettings.cutn


@dataclass(frozen=True)
class StepCosts:
    """Seconds per step of the default method on one kind of device (see the module docstring)."""

    device: str
    fixed: float
    per_token: float  # decoder forward + backward, per latent cell decoded
    per_pair: float  # the decoder's attention, per (token, token) pair of a window
    per_view: float  # CLIP forward + backward, per view

    def step_seconds(self, windows: Sequence[int], views: int, batch: int = 1) -> float:
        """A step over decode windows of `windows` tokens each, `views` views per image, `batch` images."""
        decode = sum(self.per_token * n + self.per_pair * n * n for n in windows)
        return self.fixed + batch * (decode + self.per_view * views)


# Fitted by `bench/expansion.py --canvas` (bench/RESULTS.md, "Canvas operations"): the f16-16384 VQGAN and
# ViT-B-32 at their real sizes, bf16 autocast, one torch thread of a 2-vCPU AMD EPYC (Zen 4, AVX512-BF16),
# 7 canvases from 192 to 1024 decoded tokens, CPU time; CLIP's 0.118 s per view measured alone. The fit
# is within ±6 % of every measured step but the 768-wide pan (+13 %: more of its views go forward only).
CPU_BF16 = StepCosts('cpu-bf16', fixed=0.0, per_token=0.01099, per_pair=4.12e-6, per_view=0.1179)


def estimate_step_seconds(
    canvas: Canvas,
    views: int = VIEWS,
    costs: StepCosts = CPU_BF16,
    *,
    batch: int = 1,
    context_tokens: int = CONTEXT_TOKENS,
) -> float:
    """Seconds per optimisation step of `canvas` with `views` CLIP views per image, on the device `costs` describe."""
    windows = [rect_area(w) for w in canvas.decode_windows(context_tokens)]
    return costs.step_seconds(windows, views, batch)


def estimate_run_seconds(
    canvas: Canvas,
    steps: int = 100,
    views: int = VIEWS,
    costs: StepCosts = CPU_BF16,
    *,
    batch: int = 1,
    context_tokens: int = CONTEXT_TOKENS,
) -> float:
    """Seconds for a whole run: `steps` steps, plus about one step's worth for the start (encode, image prompt)
    and the final decode, as measured on a 16:9 expansion (3.3 s + 1.8 s against a 7.0 s step)."""
    return (steps + 1) * estimate_step_seconds(canvas, views, costs, batch=batch, context_tokens=context_tokens)


@dataclass(frozen=True)
class StepSample:
    """One measured step: the canvas's decode windows (tokens each), views per image, batch, seconds."""

    windows: tuple[int, ...]
    views: int
    batch: int
    seconds: float

    @classmethod
    def of(cls, canvas: Canvas, views: int, batch: int, seconds: float, context_tokens: int = CONTEXT_TOKENS) -> StepSample:
        return cls(tuple(rect_area(w) for w in canvas.decode_windows(context_tokens)), views, batch, seconds)


def fit_step_costs(samples: Sequence[StepSample], device: str, per_view: float | None = None) -> StepCosts:
    """Least-squares coefficients from measured steps (negative ones set to 0 and the rest refitted).

    Views are usually the same in every sample, so their cost cannot be told from `fixed`:
    pass `per_view` measured on its own (CLIP forward and backward of a batch of views ÷ its size).
    """
    names = ['fixed', 'per_token', 'per_pair'] + ([] if per_view is not None else ['per_view'])
    rows, target = [], []
    for s in samples:
        decode = [s.batch * sum(s.windows), s.batch * sum(n * n for n in s.windows)]
        row = [1.0, *decode] + ([] if per_view is not None else [s.batch * s.views])
        rows.append(row)
        target.append(s.seconds - (s.batch * s.views * per_view if per_view is not None else 0.0))
    import numpy as np  # fitting runs on a worker; estimating (the bot, before queueing) needs no numpy

    matrix, goal = np.asarray(rows, dtype=np.float64), np.asarray(target, dtype=np.float64)
    active = list(range(len(names)))
    while True:
        solution = np.zeros(len(names))
        solution[active] = np.linalg.lstsq(matrix[:, active], goal, rcond=None)[0]
        negative = [i for i in active if solution[i] < 0]
        if not negative:
            break
        active = [i for i in active if i not in negative]
    values = dict(zip(names, solution.tolist(), strict=True))
    view = values.get('per_view', per_view or 0.0)
    return StepCosts(device, values['fixed'], values['per_token'], values['per_pair'], view)
