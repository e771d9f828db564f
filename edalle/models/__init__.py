"""The networks: DalleBart (Flax), the f16 VQGAN (torch) and the CLIP ranker (open_clip)."""
