"""A wrapper exporting a model channels-last (TFLite targets whose apps feed HWC frames)."""

import torch


class ChannelsLast(torch.nn.Module):
    """Takes 4-D inputs as NHWC and returns 4-D outputs as NHWC."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        out = self.module(*(a.permute(0, 3, 1, 2) if a.dim() == 4 else a for a in args))
        flip = lambda t: t.permute(0, 2, 3, 1) if t.dim() == 4 else t  # noqa: E731
        return tuple(flip(t) for t in out) if isinstance(out, (tuple, list)) else flip(out)
