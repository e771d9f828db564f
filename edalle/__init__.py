"""edalle: DALL·E mini generation, CLIP ranking and E-DALL-E expansion behind a Discord bot."""

__version__ = '0.1.0'
