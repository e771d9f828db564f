"""E-DALL-E: widen a 256×256 picture to another aspect ratio with CLIP-guided VQGAN latents.

`classic` is the original method step for step (the baseline); `default` is the faster,
centre-exact rewrite. `edalle.expander.api` is what the engine, worker and CLI call.
"""
