"""What this CPU computes natively, for the models that pick their precision from it (the expander, the upscaler)."""

from __future__ import annotations

import torch


def native_bf16_cpu() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AVX512-BF16 or AMX); without it bf16 is emulated and slow."""
    checks = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
