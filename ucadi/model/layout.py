"""A model's parameters as one flat vector, and the layout hash that pins its order.

FedAvg under encryption works on flat vectors: every floating-point tensor of the state dict
(weights and BatchNorm running statistics alike, so those are averaged too) is laid end to end
in a fixed order. Integer buffers (BatchNorm's `num_batches_tracked`, a counter unused with a
fixed momentum) are not averaged: they are not model knowledge and would blow the codec's
bound. A site adopting a global version resets them to zero, as the initial model has them
(`load_into`), so every site, restarted or not, holds and publishes the same bytes for it.
The layout hash (names, shapes, dtypes) travels with every ciphertext, so an update from a
different architecture or preset is refused before it is summed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ucadi.errors import UcadiError


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
        """SHA-256 (hex) of the layout description."""
        text = json.dumps([list(e) for e in self.entries], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def flatten(self, state: Mapping[str, torch.Tensor]) -> np.ndarray:
        """State dict (any key order) -> float64 vector of its float tensors in layout order."""
        if sorted(ParameterLayout.of(state).entries) != sorted(self.entries):
            raise LayoutMismatchError("state dict does not match the federation's parameter "
                                      f"layout {self.hash[:12]} (different model or preset?)")
        parts = [state[name].detach().to("cpu", torch.float64).reshape(-1).numpy()
                 for name, _, _ in self.entries]
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
            piece = vector[offset:offset + size].reshape(shape)
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
