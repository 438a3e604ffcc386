"""A model's parameters as one flat vector, and the layout hash that pins its order.

FedAvg under encryption works on flat vectors: every floating-point tensor of the state dict
(weights and BatchNorm running statistics alike, so those are averaged too) is laid end to end
in a fixed order. Integer buffers (BatchNorm's `num_batches_tracked`, a counter unused with a
fixed momentum) are not averaged: they are not model knowledge and would blow the codec's
bound. A site adopting a global version resets them to zero, as the initial model has them
(`load_into`), so every site, restarted or not, holds and publishes the same bytes for it.
BatchNorm running statistics travel divided by RUNNING_STAT_SCALE: a running variance grows
past the codec's bound of 8 (seen at small batches, over longer runs and with server
optimisers), while weights stay far inside it; a power of two keeps the scaling exact, and
averaging commutes with it. The layout hash (names, shapes, dtypes and that scale) travels
with every ciphertext, so an update from a different architecture, preset or software version
is refused before it is summed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ucadi.errors import UcadiError

# Exact power of two: running statistics up to 8 * 32 = 256 fit the codec's bound.
RUNNING_STAT_SCALE = 32.0
RUNNING_STAT_SUFFIXES = ("running_mean", "running_var")


def wire_scale(name: str) -> float:
    """Factor a state entry is divided by in the flat vector (1 for weights)."""
    return RUNNING_STAT_SCALE if name.endswith(RUNNING_STAT_SUFFIXES) else 1.0


class LayoutMismatchError(UcadiError):
    """A vector or state dict does not fit the expected parameter layout."""


@dataclass(frozen=True)
class ParameterLayout:
    """Ordered (name, shape, dtype) entries of a state dict."""

    entries: tuple[tuple[str, tuple[int, ...], str], ...]

    @classmethod
    def of(cls, state: Mapping[str, torch.Tensor]) -> ParameterLayout:
        """The layout of a state dict's floating-point tensors, in its own key order."""
        return cls(tuple((name, tuple(t.shape), str(t.dtype).removeprefix("torch."))
                         for name, t in state.items() if t.is_floating_point()))

    @property
    def value_count(self) -> int:
        """Number of values in the flat vector."""
        return int(sum(int(np.prod(shape)) for _, shape, _ in self.entries))

    @property
    def hash(self) -> str:
        """SHA-256 (hex) of the layout description (with each entry's scale)."""
        text = json.dumps([[*e, wire_scale(e[0])] for e in self.entries], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def flatten(self, state: Mapping[str, torch.Tensor]) -> np.ndarray:
        """State dict (any key order) -> float64 vector of its float tensors in layout order
        (running statistics divided by RUNNING_STAT_SCALE)."""
        if sorted(ParameterLayout.of(state).entries) != sorted(self.entries):
            raise LayoutMismatchError("state dict does not match the federation's parameter "
                                      f"layout {self.hash[:12]} (different model or preset?)")
        parts = [state[name].detach().to("cpu", torch.float64).reshape(-1).numpy()
                 / wire_scale(name) for name, _, _ in self.entries]
        return np.concatenate(parts) if parts else np.zeros(0)

    def unflatten(self, vector: np.ndarray) -> dict[str, torch.Tensor]:
        """Flat vector -> the floating-point part of a state dict (load with strict=False)."""
        if vector.shape != (self.value_count,):
            raise LayoutMismatchError(f"vector has shape {vector.shape}; the layout needs "
                                      f"({self.value_count},)")
        state: dict[str, torch.Tensor] = {}
        offset = 0
        for name, shape, dtype in self.entries:
            size = int(np.prod(shape))
            piece = vector[offset:offset + size].reshape(shape) * wire_scale(name)
            torch_dtype = getattr(torch, dtype)
            state[name] = torch.from_numpy(np.ascontiguousarray(piece)).to(torch_dtype)
            offset += size
        return state


def load_into(model: torch.nn.Module, layout: ParameterLayout, vector: np.ndarray) -> None:
    """Make `model` global version `vector`: its float tensors from the vector, its integer
    buffers (batch counters a site's own training advanced) back to zero."""
    model.load_state_dict(layout.unflatten(vector), strict=False)
    for tensor in model.state_dict().values():  # views of the model's own buffers
        if not tensor.is_floating_point():
            tensor.zero_()


def initial_model(arch: str, preset: str, num_classes: int, seed: int) -> torch.nn.Module:
    """Global version 0: the model every site builds identically from the federation's seed."""
    from ucadi.model import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch, preset, num_classes)
