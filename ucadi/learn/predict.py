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
    study is read with ucadi.ct.load_stack.
    """
    rows: list[np.ndarray] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("predicting", total=len(records))
        for index, record in enumerate(records):
            stack = stack_of(index) if stack_of else load_stack(record.series_dir, config)
            inputs = sample_stack(stack, config, samples=samples,
                                  seed=study_seed(seed, TEST_EPOCH, record.case_id))
            rows.append(predict_inputs(model, inputs, device=device,
                                       batch_size=batch_size).mean(axis=0))
            bar.update(task, advance=1)
    return np.stack(rows) if rows else np.zeros((0, getattr(model, "num_classes", 0)))
