"""Multiply-accumulates per inference, counted by PyTorch's own flop counter on the model
at the size it was built at (achieved GMAC/s in benchmarks).

torch.utils.flop_counter gives the same counts as the ONNX-graph count this replaced on the
digits CNN (337,536) and MobileNetV2 (300,774,272), and also counts models with dynamic
dims. Attention is counted through PyTorch's math kernel: the fused CPU kernel has no flop
formula, and would leave out the attention products (4.7 M of all-MiniLM-L6-v2's 344.6 M
MACs at 32 tokens).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from edgepack_runtime.manifest import TensorSpec

__all__ = ["count_macs"]


def count_macs(module: torch.nn.Module, specs: tuple[TensorSpec, ...],
               sample: dict[str, np.ndarray]) -> Optional[int]:
    """MACs of one inference of `module` on `sample` (one input per spec); None if the
    counter cannot run the model."""
    args = tuple(torch.from_numpy(np.ascontiguousarray(sample[s.name])) for s in specs)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            module(*args)
    except Exception:  # a model the counter cannot trace: better no number than a wrong one
        return None
    return counter.get_total_flops() // 2  # one multiply-accumulate is two flops
