"""CycleGAN training inside one site: unpaired contrast-enhanced and non-contrast slices from
the site's own training studies (no image leaves the site), LSGAN + cycle + identity losses."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ucadi.augment.networks import build_discriminator, build_generator
from ucadi.augment.presets import AugmentError, CycleGANPreset
from ucadi.augment.translate import to_unit
from ucadi.ct import CTInputError, PreprocessConfig, load_stack


@dataclass
class SliceDomains:
    """Windowed HU slices (n, size, size) of the two domains, and where they came from."""

    contrast: np.ndarray
    noncontrast: np.ndarray
    studies: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def even_slices(stack: np.ndarray, count: int) -> np.ndarray:
    """`count` evenly spaced slices of a stack (all of them when count is 0 or larger)."""
    if count <= 0 or count >= len(stack):
        return stack
    return stack[np.round(np.linspace(0, len(stack) - 1, count)).astype(int)]


def collect_slices(records: Sequence[Any], preset: CycleGANPreset,
                   window_hu: tuple[float, float],
                   progress: Callable[[str], None] | None = None) -> SliceDomains:
    """Slices of every record, split by the manifest's `contrast` column. An unreadable study
    is skipped and named; a domain without any study is an AugmentError."""
    config = PreprocessConfig(size=(preset.size, preset.size), window_hu=window_hu)
    domains: dict[int, list[np.ndarray]] = {0: [], 1: []}
    skipped = []
    for number, record in enumerate(records, 1):
        try:
            stack = load_stack(record.series_dir, config)
        except CTInputError as exc:
            skipped.append(f"{record.case_id}: {exc}")
            continue
        domains[int(bool(int(record.contrast)))].append(even_slices(stack,
                                                                    preset.slices_per_study))
        if progress and (number % 10 == 0 or number == len(records)):
            progress(f"read {number}/{len(records)} studies")
    counts = {"contrast": len(domains[1]), "non_contrast": len(domains[0])}
    for name, key in (("contrast-enhanced", 1), ("non-contrast", 0)):
        if not domains[key]:
            raise AugmentError(f"no readable {name} studies among the {len(records)} given "
                               f"(contrast {counts['contrast']}, non-contrast "
                               f"{counts['non_contrast']}); the CycleGAN needs both kinds, "
                               "told apart by the manifest's `contrast` column")
    return SliceDomains(np.concatenate(domains[1]), np.concatenate(domains[0]), counts, skipped)


class ImagePool:
    """Shrivastava et al.'s history buffer: the discriminator sees half fresh, half earlier
    fakes once the pool is full (size 0: always the fresh batch)."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.rng = rng
        self.images: list[torch.Tensor] = []

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        """Fakes for the discriminator step."""
        if self.size == 0:
            return batch
        out = []
        for image in batch.detach():
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.rng.random() < 0.5:
                index = int(self.rng.integers(self.size))
                out.append(self.images[index])
                self.images[index] = image
            else:
                out.append(image)
        return torch.stack(out)


@dataclass
class CycleGANResult:
    """The trained contrast -> non-contrast generator, its inverse, and per-epoch losses."""

    to_noncontrast: nn.Module
    to_contrast: nn.Module
    history: list[dict[str, float]]
    seconds: float


def train_cyclegan(domains: SliceDomains, preset: CycleGANPreset, window_hu: tuple[float, float],
                   *, seed: int = 0, epochs: int | None = None,
                   on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
                   ) -> CycleGANResult:
    """Train both generators and discriminators; an epoch is one pass over the larger domain.
    `epochs` shortens the run, keeping the preset's constant-then-decay proportions."""
    if epochs is not None:
        if epochs < 1:
            raise AugmentError(f"epochs must be >= 1; got {epochs}")
        constant = round(preset.constant_epochs * epochs / preset.epochs)
        preset = replace(preset, epochs=epochs, constant_epochs=constant)
    a = torch.from_numpy(to_unit(domains.contrast, window_hu)).unsqueeze(1)
    b = torch.from_numpy(to_unit(domains.noncontrast, window_hu)).unsqueeze(1)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g_ab, g_ba = build_generator(preset), build_generator(preset)
        d_a, d_b = build_discriminator(preset), build_discriminator(preset)
        history = _fit(a, b, (g_ab, g_ba, d_a, d_b), preset, rng, on_epoch_end)
    g_ab.eval()
    g_ba.eval()
    return CycleGANResult(g_ab, g_ba, history, time.perf_counter() - started)


def _fit(a: torch.Tensor, b: torch.Tensor, nets: tuple[nn.Module, ...], preset: CycleGANPreset,
         rng: np.random.Generator,
         on_epoch_end: Callable[[int, dict[str, float]], None] | None) -> list[dict[str, float]]:
    g_ab, g_ba, d_a, d_b = nets
    betas = (preset.beta1, 0.999)
    opt_g = torch.optim.Adam(list(g_ab.parameters()) + list(g_ba.parameters()), lr=preset.lr,
                             betas=betas)
    opt_d = torch.optim.Adam(list(d_a.parameters()) + list(d_b.parameters()), lr=preset.lr,
                             betas=betas)
    pool_a, pool_b = ImagePool(preset.pool_size, rng), ImagePool(preset.pool_size, rng)
    mse, l1 = nn.MSELoss(), nn.L1Loss()
    lambda_cycle = preset.cycle_weight
    lambda_identity = preset.identity_weight * preset.cycle_weight
    steps = max(1, int(np.ceil(max(len(a), len(b)) / preset.batch_size)))
    history = []
    for epoch in range(preset.epochs):
        lr = preset.lr_at(epoch)
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        order_a, order_b = rng.permutation(len(a)), rng.permutation(len(b))
        sums = {"generator": 0.0, "cycle": 0.0, "identity": 0.0, "discriminator": 0.0}
        for step in range(steps):
            offsets = step * preset.batch_size + np.arange(preset.batch_size)
            real_a = a[order_a[offsets % len(a)]]
            real_b = b[order_b[offsets % len(b)]]
            # Generators: fool both discriminators, reconstruct both ways, keep identities.
            for d in (d_a, d_b):
                d.requires_grad_(False)
            fake_b, fake_a = g_ab(real_a), g_ba(real_b)
            score_b, score_a = d_b(fake_b), d_a(fake_a)
            adversarial = mse(score_b, torch.ones_like(score_b)) + \
                mse(score_a, torch.ones_like(score_a))
            cycle = l1(g_ba(fake_b), real_a) + l1(g_ab(fake_a), real_b)
            identity = l1(g_ab(real_b), real_b) + l1(g_ba(real_a), real_a) \
                if lambda_identity > 0 else torch.zeros(())
            loss_g = adversarial + lambda_cycle * cycle + lambda_identity * identity
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            # Discriminators: real vs (pooled) fake, each loss halved as in the reference.
            for d in (d_a, d_b):
                d.requires_grad_(True)
            loss_d = (_d_loss(d_a, real_a, pool_a.query(fake_a), mse)
                      + _d_loss(d_b, real_b, pool_b.query(fake_b), mse))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            sums["generator"] += float(loss_g.detach())
            sums["cycle"] += float(cycle.detach())
            sums["identity"] += float(identity.detach())
            sums["discriminator"] += float(loss_d.detach())
        row = {"epoch": epoch + 1, "lr": lr, **{k: v / steps for k, v in sums.items()}}
        history.append(row)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    return history


def _d_loss(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, mse: nn.Module) -> torch.Tensor:
    real_score, fake_score = d(real), d(fake.detach())
    return 0.5 * (mse(real_score, torch.ones_like(real_score))
                  + mse(fake_score, torch.zeros_like(fake_score)))
