"""E-DALL-E and what grew from it: CLIP-guided VQGAN latents on a canvas.

A canvas (`canvas.py`) says what to make: a picture widened to a ratio, zoomed out, panned, made
square, a region of it repainted, or a dream from a prompt alone. `default.run_canvas` optimises
any of them (the faster, source-exact method); `classic` is the original method step for step
(the baseline, ratios only). `edalle.expander.api` is what the engine, worker and CLI call.
"""
