"""Parameter counts and FLOPs of an architecture at a preset (the papers' comparison table)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ucadi.model.registry import build_model

# The papers' figures at the paper preset: parameters and (for the DenseNet) GFLOPs per study.
PAPER_PARAMETERS = {"densenet3d": 0.73e6, "resnet3d50": 46e6, "xception3d": 22e6}
PAPER_GFLOPS = {"densenet3d": 143.5}


@dataclass(frozen=True)
class ModelSummary:
    """Size and cost of one architecture at one preset, for one study."""

    arch: str
    preset: str
    input_shape: tuple[int, int, int]
    parameters: int
    forward_flops: int

    def lines(self) -> list[str]:
        """Human-readable lines for the CLI."""
        return [f"architecture   {self.arch}",
                f"preset         {self.preset}",
                f"input          1 x {' x '.join(map(str, self.input_shape))} "
                f"(channel, slices, H, W)",
                f"parameters     {self.parameters:,} ({self.parameters / 1e6:.3f} M)",
                f"forward FLOPs  {self.forward_flops / 1e9:.2f} GFLOPs per study "
                f"(multiply-add = 2 FLOPs)"] + self._paper_lines()

    def _paper_lines(self) -> list[str]:
        if self.preset != "paper":
            return []
        lines = []
        if self.arch in PAPER_PARAMETERS:
            reported = PAPER_PARAMETERS[self.arch]
            lines.append(f"papers report  {reported / 1e6:g} M parameters "
                         f"(ratio {self.parameters / reported:.3f})")
        if self.arch in PAPER_GFLOPS:
            reported = PAPER_GFLOPS[self.arch]
            lines.append(f"papers report  {reported:g} GFLOPs "
                         f"(ratio {self.forward_flops / 1e9 / reported:.3f})")
        return lines


def summarize(arch: str, preset: str, num_classes: int = 2) -> ModelSummary:
    """Count parameters and forward FLOPs without running the network on real data."""
    # On the meta device nothing is computed, so the paper-size nets cost milliseconds here.
    with torch.device("meta"):
        model = build_model(arch, preset, num_classes)
    model.eval()
    shape = model.preset.input_shape
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, *shape, device="meta"))
    params = sum(p.numel() for p in model.parameters())
    return ModelSummary(arch, preset, shape, params, counter.get_total_flops())
