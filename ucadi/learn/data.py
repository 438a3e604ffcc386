"""Studies as training examples: labels per task, cached stacks, one sampling per epoch."""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ucadi.ct import (
    CTInputError,
    PreprocessConfig,
    load_stack,
    preprocess_study,
    sample_stack,
    sampling_plan,
    zscore,
)
from ucadi.learn.recipe import (
    FOUR_CLASS_NAMES,
    SEVERITY_CLASS_NAMES,
    TASKS,
    RecipeError,
    task_class_names,
)

if TYPE_CHECKING:
    from ucadi.augment import ContrastAugmentation

# Memory kept for cached stacks; beyond it studies are re-read each epoch. At the paper's
# 128x128 input a 300-slice study is ~20 MB, so a full cohort would not fit in RAM.
DEFAULT_CACHE_BYTES = 2 << 30

# Random stream of the contrast augmentation's draw (apart from sampling and flipping).
AUGMENT_STREAM = 0xC0A7

# Label of the UK-like site, whose cases are only known as COVID-19 or not.
BINARY_ONLY_LABEL = "non_covid"


def task_label(record: Any, task: str) -> int | None:
    """Class index of a CaseRecord in `task`, or None when the task cannot use it: the
    four-class task needs the full diagnosis (not the UK-style site's binary label), the
    severity task a COVID-19 case with a grade 1-3 (index grade - 1; non-COVID cases and
    COVID-19 cases without a grade, severity 0, are left out)."""
    if task == "binary":
        return int(record.binary_label)
    if task == "four_class":
        if record.label == BINARY_ONLY_LABEL:
            return None
        return FOUR_CLASS_NAMES.index(record.label)
    if task == "severity":
        grade = int(record.severity or 0)
        if not int(record.binary_label) or not 1 <= grade <= len(SEVERITY_CLASS_NAMES):
            return None
        return grade - 1
    raise RecipeError(f"task {task!r} is unknown; choose one of {TASKS}")


def usable_records(records: Sequence[Any], task: str) -> list[Any]:
    """The records `task` can use (see task_label)."""
    return [r for r in records if task_label(r, task) is not None]


def study_seed(seed: int, epoch: int, case_id: str) -> int:
    """Sampling seed of one study at one epoch, independent of the cohort's order."""
    sequence = np.random.SeedSequence([seed, epoch, zlib.crc32(case_id.encode())])
    return int(sequence.generate_state(1)[0])


class StudyDataset(Dataset):
    """CaseRecords as (input [1, slices, H, W], label): one fresh sampling per study per epoch.

    Every study is read once when the dataset is made (ucadi.ct.load_stack): a study that
    cannot be used (a truncated or damaged slice, too few slices, broken geometry) is skipped
    with a warning naming the case and the file, so one bad study neither stops a site's
    training nor goes into its sample count (the FedAvg weight). Stacks stay in memory while
    the cache holds less than `cache_bytes`; studies beyond it are preprocessed from disk each
    time, decoding only the sampled slices (same values). `set_epoch` changes which 16 slices
    every study contributes (seed + epoch). Training sets also flip studies left-right at
    random, a symmetry chest CT findings keep. With `contrast_augment` (ucadi.augment), a
    contrast-enhanced study's sampled slices are, at the augmentation's probability, replaced
    by their CycleGAN translation to non-contrast before standardisation.
    """

    def __init__(self, records: Sequence[Any], config: PreprocessConfig, task: str,
                 train: bool, seed: int, *, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 contrast_augment: ContrastAugmentation | None = None) -> None:
        usable = [(r, task_label(r, task)) for r in records]
        skipped = [r.case_id for r, label in usable if label is None]
        if skipped and task == "four_class":
            warnings.warn(f"{len(skipped)} cases labelled {BINARY_ONLY_LABEL!r} skipped: the "
                          f"{task} task needs the full label (e.g. {skipped[:3]})", stacklevel=2)
        # The severity task leaves out every non-COVID case (most of a cohort) by design:
        # no warning; the summary's case count says how many were kept.
        if contrast_augment is not None:
            if not train:
                raise RecipeError("contrast augmentation is for training sets only")
            contrast_augment.translator.check_matches(config)
        self.contrast_augment = contrast_augment
        # Samplings of contrast-enhanced studies replaced by their translation (all epochs).
        self.translated_samples = 0
        self.config = config
        self.task = task
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.cache_bytes = cache_bytes
        self._stacks: dict[int, np.ndarray] = {}
        self._cached_bytes = 0
        self._cache_full = False
        self.records: list[Any] = []
        labels: list[int] = []
        # (case id, why) of each study left out because it cannot be loaded.
        self.unreadable: list[tuple[str, str]] = []
        for record, label in usable:
            if label is None:
                continue
            try:
                stack = load_stack(record.series_dir, config)
            except CTInputError as exc:
                self.unreadable.append((record.case_id, str(exc)))
                warnings.warn(f"study {record.case_id} skipped: {exc}", stacklevel=2)
                continue
            self._keep(len(self.records), stack)
            self.records.append(record)
            labels.append(label)
        self.labels = np.array(labels, dtype=int)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Choose the sampling of every study for global epoch `epoch`."""
        self.epoch = epoch

    def stack(self, index: int) -> np.ndarray:
        """The cached (n_slices, H, W) windowed stack of study `index`."""
        if index in self._stacks:
            return self._stacks[index]
        stack = load_stack(self.records[index].series_dir, self.config)
        self._keep(index, stack)
        return stack

    def _keep(self, index: int, stack: np.ndarray) -> None:
        if self._cached_bytes + stack.nbytes <= self.cache_bytes:
            self._stacks[index] = stack
            self._cached_bytes += stack.nbytes
        else:
            self._cache_full = True

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        seed = study_seed(self.seed, self.epoch, self.records[index].case_id)
        augment = self.contrast_augment
        if augment is not None and augment.applies(self.records[index],
                                                   np.random.default_rng([seed, AUGMENT_STREAM])):
            # The same slices as without augmentation, translated before standardisation.
            stack = self.stack(index)
            plan = sampling_plan(stack.shape[0], self.config, 1, seed)
            sample = zscore(augment.translator.translate(stack[plan]))
            self.translated_samples += 1
        elif index in self._stacks or not self._cache_full:
            sample = sample_stack(self.stack(index), self.config, samples=1, seed=seed)
        else:
            sample = preprocess_study(self.records[index].series_dir, self.config, samples=1,
                                      seed=seed)
        if self.train and np.random.default_rng(seed).random() < 0.5:
            sample = sample[..., ::-1]
        return torch.from_numpy(np.ascontiguousarray(sample)), int(self.labels[index])

    def summary(self) -> dict[str, Any]:
        """Cases per class and per site (for model cards)."""
        names = task_class_names(self.task)
        sites: dict[str, int] = {}
        for record in self.records:
            sites[record.site] = sites.get(record.site, 0) + 1
        augment = {} if self.contrast_augment is None else \
            {"contrast_augmentation": {**self.contrast_augment.describe(),
                                       "translated_samples": self.translated_samples}}
        return {"cases": len(self), "task": self.task, "sites": sites, **augment,
                "unreadable_cases": len(self.unreadable),
                "per_class": {names[k]: int((self.labels == k).sum()) for k in range(len(names))}}
