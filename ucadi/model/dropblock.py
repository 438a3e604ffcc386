"""3D DropBlock (Ghiasi et al. 2018): drops contiguous cubes of a feature map, not voxels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropBlock3d(nn.Module):
    """Zero random block_size^3 cubes with overall drop rate `drop_prob`, in training only."""

    def __init__(self, drop_prob: float, block_size: int) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"block_size must be a positive odd number, got {block_size}")
        self.drop_prob = drop_prob
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the drop mask (identity in eval mode or with drop_prob 0)."""
        if not self.training or self.drop_prob == 0.0:
            return x
        # Seed rate so that, after growing each seed into a cube, about drop_prob is dropped.
        gamma = self.drop_prob / self.block_size ** 3
        seeds = (torch.rand((x.shape[0], 1, *x.shape[2:]), device=x.device) < gamma).to(x.dtype)
        block_mask = 1.0 - F.max_pool3d(seeds, kernel_size=self.block_size, stride=1,
                                        padding=self.block_size // 2)
        kept = block_mask.sum().clamp_min(1.0)
        return x * block_mask * (block_mask.numel() / kept)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"
