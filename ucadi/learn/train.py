"""Local training: the API the federated trainer calls, one epoch at a time.

Every epoch is a pure function of (weights, optimiser state, recipe, seed, global epoch): the
study samplings, the shuffling order and the DropBlock masks all derive from (seed, epoch), so
a run interrupted between epochs and resumed reproduces the uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader

from ucadi.learn.data import StudyDataset
from ucadi.learn.recipe import RecipeError, TrainingRecipe, lr_at


@dataclass
class LocalUpdate:
    """Result of local training: new weights (incl. BN buffers), samples seen, metrics."""

    state: dict[str, torch.Tensor]
    num_samples: int
    epochs: int
    metrics: dict[str, float] = field(default_factory=dict)


def make_optimizer(model: nn.Module, recipe: TrainingRecipe) -> torch.optim.SGD:
    """SGD with the recipe's momentum and weight decay (lr is set per step by lr_at)."""
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of everything random in one global epoch."""
    return int(np.random.SeedSequence([seed, epoch, 0x7A1]).generate_state(1)[0])


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
                    disable=not enabled, transient=True)


@dataclass(frozen=True)
class ProximalTerm:
    """FedProx's mu/2 ||w - w_global||^2 on the local loss (Li et al., MLSys 2020): its
    gradient mu (w - w_global) is added to each parameter's gradient before the step."""

    mu: float
    anchors: tuple[torch.Tensor, ...]

    @classmethod
    def around(cls, model: nn.Module, mu: float) -> ProximalTerm:
        """The term anchored at the model's current parameters (the global model)."""
        return cls(mu, tuple(p.detach().clone() for p in model.parameters()))

    def add_gradient(self, model: nn.Module) -> None:
        """grad += mu (w - anchor) for every parameter that has a gradient."""
        for parameter, anchor in zip(model.parameters(), self.anchors, strict=True):
            if parameter.grad is not None:
                parameter.grad.add_(parameter.detach() - anchor.to(parameter.device),
                                    alpha=self.mu)


def optimizer_step(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                   criterion: nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None, mixed: bool,
                   proximal: ProximalTerm | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step (float16 autocast when `mixed`, CUDA only); returns (loss, logits)."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16, enabled=mixed):
        logits = model(inputs)
        loss = criterion(logits.float(), labels)
    if scaler is not None:
        scaler.scale(loss).backward()
        if proximal is not None:
            scaler.unscale_(optimizer)
            proximal.add_gradient(model)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if proximal is not None:
            proximal.add_gradient(model)
        optimizer.step()
    return loss, logits


def train_epoch(model: nn.Module, dataset: StudyDataset, recipe: TrainingRecipe,
                optimizer: torch.optim.Optimizer, epoch: int, *, device: str = "cpu",
                seed: int = 0, scaler: torch.amp.GradScaler | None = None,
                progress: bool = True, proximal: ProximalTerm | None = None) -> dict[str, float]:
    """Train one global epoch in place; returns mean loss and accuracy on the seen samples."""
    dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    loader = DataLoader(dataset, batch_size=recipe.batch_size, shuffle=True,
                        generator=generator)
    weights = torch.tensor(recipe.loss_weights, dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(weight=weights)
    on_cuda = torch.device(device).type == "cuda"
    model.to(device).train()
    if on_cuda:
        # channels_last_3d + float16 autocast is the fast path for 3D convolutions on GPUs.
        model.to(memory_format=torch.channels_last_3d)
    total_loss, correct, seen = 0.0, 0, 0
    devices = [torch.device(device).index or 0] if on_cuda else []
    with torch.random.fork_rng(devices=devices), _progress(progress) as bar:
        torch.manual_seed(epoch_seed(seed, epoch))
        task = bar.add_task(f"epoch {epoch + 1}/{recipe.total_epochs}", total=len(loader),
                            loss=float("nan"))
        for step, (inputs, labels) in enumerate(loader):
            # LR at the middle of this step's share of the epoch: never exactly 0 at the start.
            for group in optimizer.param_groups:
                group["lr"] = lr_at(recipe, epoch + (step + 0.5) / len(loader))
            inputs, labels = inputs.to(device), labels.to(device)
            if on_cuda:
                inputs = inputs.contiguous(memory_format=torch.channels_last_3d)
            loss, logits = optimizer_step(model, inputs, labels, criterion, optimizer, scaler,
                                          on_cuda, proximal)
            total_loss += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            bar.update(task, advance=1, loss=total_loss / seen)
    return {"train_loss": total_loss / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "lr_end": float(optimizer.param_groups[0]["lr"])}


def make_scaler(device: str) -> torch.amp.GradScaler | None:
    """Loss scaler for float16 mixed precision on CUDA; None on CPU (fp32 there)."""
    return torch.amp.GradScaler("cuda") if torch.device(device).type == "cuda" else None


def train_local(model: nn.Module, dataset: StudyDataset, recipe: TrainingRecipe, *,
                start_epoch: int, epochs: int, device: str = "cpu", seed: int = 0,
                progress: bool = True, optimizer: torch.optim.Optimizer | None = None,
                proximal_mu: float = 0.0) -> LocalUpdate:
    """Train `epochs` epochs from global epoch `start_epoch`.

    Pass the same `optimizer` (made once with `make_optimizer` for this model) to keep SGD
    momentum across calls, as a federated site does between rounds; otherwise momentum starts
    from zero. `proximal_mu` > 0 adds FedProx's term anchored at the starting weights.
    """
    if len(dataset) == 0:
        raise RecipeError("the training set is empty; check the site name and split")
    optimizer = optimizer or make_optimizer(model, recipe)
    scaler = make_scaler(device)
    proximal = ProximalTerm.around(model, proximal_mu) if proximal_mu > 0 else None
    started = time.perf_counter()
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, start_epoch + epochs):
        metrics = train_epoch(model, dataset, recipe, optimizer, epoch, device=device,
                              seed=seed, scaler=scaler, progress=progress, proximal=proximal)
    elapsed = time.perf_counter() - started
    metrics["seconds"] = elapsed
    metrics["samples_per_second"] = len(dataset) * epochs / elapsed if elapsed > 0 else 0.0
    state = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in
             model.state_dict().items()}
    return LocalUpdate(state=state, num_samples=len(dataset) * epochs, epochs=epochs,
                       metrics={k: float(v) for k, v in metrics.items()})
