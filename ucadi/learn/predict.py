"""Test-time prediction: K independent samplings per study, probabilities averaged (SPEC §1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from ucadi.ct import TEST_SAMPLINGS, PreprocessConfig, load_stack, sample_stack
from ucadi.learn.data import study_seed

# Epoch slot of test-time seeds, beyond any training epoch (seeds must be non-negative).
TEST_EPOCH = 2**31 - 1


def predict_inputs(model: torch.nn.Module, inputs: np.ndarray, *, device: str = "cpu",
                   batch_size: int = 8) -> np.ndarray:
    """Softmax probabilities (N, classes) of preprocessed inputs (N, slices, H, W)."""
    model.to(device).eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch_size]))
            logits = model(batch[:, None].to(device))
            outputs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(outputs).astype(np.float64)


def predict_probabilities(model: torch.nn.Module, records: Sequence[Any],
                          config: PreprocessConfig, *, samples: int = TEST_SAMPLINGS,
                          seed: int = 0, device: str = "cpu", batch_size: int = 8,
                          stack_of: Callable[[int], np.ndarray] | None = None,
                          progress: bool = False) -> np.ndarray:
    """(N, classes) class probabilities per study, averaged over `samples` samplings.

    `stack_of(i)` may supply already-loaded stacks (e.g. StudyDataset.stack); otherwise each
    study is read with ucadi.ct.load_stack. Consecutive studies share forward passes of up to
    `batch_size` samplings (a study's samplings are never split): on a CPU one sampling alone
    costs a small 3D network about as much as eight together (oneDNN's single-item path is
    slow: measured 4x a batch of two), so validation with one sampling per study runs several
    times faster batched. A study's probabilities depend only on its own samplings (the model
    is in eval mode).
    """
    rows: list[np.ndarray] = []
    waiting: list[np.ndarray] = []  # sampled inputs of studies not yet through the model

    def run_waiting() -> None:
        if not waiting:
            return
        inputs = np.concatenate(waiting)
        probs = predict_inputs(model, inputs, device=device, batch_size=len(inputs))
        start = 0
        for study in waiting:
            rows.append(probs[start:start + len(study)].mean(axis=0))
            start += len(study)
        waiting.clear()

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("predicting", total=len(records))
        for index, record in enumerate(records):
            stack = stack_of(index) if stack_of else load_stack(record.series_dir, config)
            inputs = sample_stack(stack, config, samples=samples,
                                  seed=study_seed(seed, TEST_EPOCH, record.case_id))
            if waiting and sum(map(len, waiting)) + len(inputs) > batch_size:
                run_waiting()
            waiting.append(inputs)
            bar.update(task, advance=1)
        run_waiting()
    return np.stack(rows) if rows else np.zeros((0, getattr(model, "num_classes", 0)))
