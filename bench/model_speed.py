"""Training and inference speed of the 3D-DenseNet presets, on CPU and (when present) CUDA.

CPU: training samples/second (forward + backward + SGD step, batch 16 for `cpu-small`, a single
sample for `paper`, which costs ~20 s here) and inference studies/second (5 samplings per study,
SPEC §1). CUDA: float32 against float16 autocast + channels_last_3d, the path train.py uses.
Baselines: TOOLING.md measured ~1.4 s per sample for the paper-width net at 16x32x32 and ~20 s at
the paper's 16x128x128; the goal for `cpu-small` is 0.05-0.2 s per training sample on one core.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ucadi.learn.train import optimizer_step
from ucadi.model import build_model

SAMPLINGS_PER_STUDY = 5
CPU_SMALL_GOAL_S = (0.05, 0.2)
PAPER_BASELINE_S = 20.0
PAPER_WIDTH_AT_32_BASELINE_S = 1.4


def _train_seconds_per_sample(model: nn.Module, batch: int, steps: int, device: str,
                              mixed: bool) -> float:
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda") if mixed else None
    shape = (batch, 1, *model.preset.input_shape)
    x = torch.randn(shape, device=device)
    if mixed:
        x = x.contiguous(memory_format=torch.channels_last_3d)
        model.to(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 2, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    timings = []
    for step in range(steps + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        optimizer_step(model, x, y, loss_fn, optimizer, scaler, mixed)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if step:  # the first step pays one-off allocation and kernel selection
            timings.append(time.perf_counter() - started)
    return sorted(timings)[len(timings) // 2] / batch


def _inference_seconds_per_study(model: nn.Module, samplings: int, device: str) -> float:
    model.to(device).eval()
    x = torch.randn(samplings, 1, *model.preset.input_shape, device=device)
    with torch.no_grad():
        if device.startswith("cuda"):
            model(x)  # kernel selection and allocation happen on the first call
            torch.cuda.synchronize()
        started = time.perf_counter()
        model(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return (time.perf_counter() - started) * SAMPLINGS_PER_STUDY / samplings


def run(quick: bool) -> list[str]:
    """Print CPU (and CUDA) figures; return summary lines with ratios and goals."""
    torch.manual_seed(0)
    summary: list[str] = []
    small = build_model("densenet3d", "cpu-small")
    for threads in (1, torch.get_num_threads()):
        torch.set_num_threads(threads)
        per_sample = _train_seconds_per_sample(small, 16, 2 if quick else 6, "cpu", False)
        per_study = _inference_seconds_per_study(small, SAMPLINGS_PER_STUDY, "cpu")
        print(f"cpu-small, {threads} thread(s): training {1 / per_sample:.1f} samples/s "
              f"({per_sample:.3f} s/sample), inference {1 / per_study:.1f} studies/s")
        if threads == 1:
            met = per_sample <= CPU_SMALL_GOAL_S[1]
            summary.append(f"cpu-small train {per_sample:.3f} s/sample on 1 core "
                           f"({PAPER_WIDTH_AT_32_BASELINE_S / per_sample:.0f}x faster than the "
                           f"paper-width net at 16x32x32); goal <= {CPU_SMALL_GOAL_S[1]} s: "
                           f"{'met' if met else 'NOT met'}")
            summary.append(f"cpu-small inference {1 / per_study:.1f} studies/s on 1 core "
                           f"(5 samplings each)")
    paper = build_model("densenet3d", "paper")
    per_sample = _train_seconds_per_sample(paper, 1, 1 if quick else 2, "cpu", False)
    samplings = 1 if quick else SAMPLINGS_PER_STUDY
    per_study = _inference_seconds_per_study(paper, samplings, "cpu")
    print(f"paper, {torch.get_num_threads()} thread(s): training {per_sample:.1f} s/sample, "
          f"inference {per_study:.1f} s/study ({samplings} sampling(s) timed)")
    summary.append(f"paper train {per_sample:.1f} s/sample on CPU vs {PAPER_BASELINE_S:.0f} s "
                   f"baseline (ratio {PAPER_BASELINE_S / per_sample:.2f}); a GPU job")
    summary.extend(_cuda(quick))
    return summary


def _cuda(quick: bool) -> list[str]:
    if not torch.cuda.is_available():
        print("no GPU here: CUDA figures (fp32 vs float16 autocast + channels_last_3d) skipped")
        return ["cuda: no GPU here"]
    lines = []
    name = torch.cuda.get_device_name(0)
    for preset, batch in (("cpu-small", 16), ("paper", 16)):
        fp32 = _train_seconds_per_sample(build_model("densenet3d", preset), batch,
                                         3 if quick else 10, "cuda", False)
        mixed = _train_seconds_per_sample(build_model("densenet3d", preset), batch,
                                          3 if quick else 10, "cuda", True)
        infer = _inference_seconds_per_study(build_model("densenet3d", preset), 5, "cuda")
        print(f"{name} {preset}: fp32 {1 / fp32:.1f} samples/s, mixed+channels_last "
              f"{1 / mixed:.1f} samples/s, inference {1 / infer:.1f} studies/s")
        lines.append(f"cuda {preset}: mixed precision + channels_last {fp32 / mixed:.2f}x fp32 "
                     f"training throughput ({1 / mixed:.0f} samples/s); goal > 1: "
                     f"{'met' if fp32 / mixed > 1 else 'NOT met'}")
    return lines
