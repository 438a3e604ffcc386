"""A site's learner in a federation: local training from the global model, and the global
model's next version from each decrypted FedAvg average.

The same object runs in the trainer service (between a decryption and an encryption) and in
the plaintext simulation of the experiments, so both train and update identically. It holds:
- the global model x (identical at every site: version 0 from the federation's seed, then
  `ServerOptimizer.step(x, average)` for every published version, in order);
- the site's model: x, except under FedBN its BatchNorm layers, which stay the site's own;
- the local SGD optimiser, whose momentum carries over between rounds (site-local state).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ucadi.learn.data import StudyDataset
from ucadi.learn.recipe import TrainingRecipe
from ucadi.learn.server_opt import FederatedOptimization, ServerOptimizer
from ucadi.learn.train import LocalUpdate, make_optimizer, train_local
from ucadi.model.layout import ParameterLayout, load_into


def load_global_model(state_file: Path, arch: str, preset: str, num_classes: int,
                      init_seed: int) -> nn.Module:
    """The global model a site saved (`SiteLearner.saved_state`, file global-state.safetensors):
    what a hospital that did not train is given (averaged BatchNorm under FedBN)."""
    from safetensors.numpy import load_file

    from ucadi.model.layout import initial_model

    model = initial_model(arch, preset, num_classes, init_seed)
    layout = ParameterLayout.of(model.state_dict())
    model.load_state_dict(layout.unflatten(load_file(str(state_file))["global"]), strict=False)
    return model


def value_masks(model: nn.Module, layout: ParameterLayout) -> tuple[np.ndarray, np.ndarray]:
    """(trainable, batchnorm) boolean masks over the layout's flat vector: values of
    parameters (not buffers), and values of BatchNorm layers (affine and running stats)."""
    parameters = {name for name, _ in model.named_parameters()}
    norm_prefixes = tuple(f"{name}." for name, module in model.named_modules()
                          if isinstance(module, nn.modules.batchnorm._BatchNorm))
    trainable, batchnorm = [], []
    for name, shape, _dtype in layout.entries:
        size = int(np.prod(shape))
        trainable.append(np.full(size, name in parameters))
        batchnorm.append(np.full(size, name.startswith(norm_prefixes)))
    if not trainable:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    return np.concatenate(trainable), np.concatenate(batchnorm)


class LocalLearner(Protocol):
    """What a site agent needs from its learner (as Flower's NumPyClient: fit, and the model
    as one flat vector in the federation's layout). `SiteLearner` is the one the federation
    runs; another learner (a new task, a framework) plugs into the agent through this."""

    model: nn.Module  # the site's model: what it evaluates and publishes
    layout: ParameterLayout  # the flat vector's layout (its hash must be the federation's)
    version: int  # the newest global version adopted

    def fit(self, start_epoch: int, epochs: int) -> LocalUpdate:
        """Train `epochs` local epochs from the current model (schedule from `start_epoch`)."""
        ...

    def upload_vector(self, update: LocalUpdate) -> np.ndarray:
        """The flat float vector this site contributes to the round's FedAvg."""
        ...

    def adopt(self, average: np.ndarray, version: int) -> None:
        """Step the global model to `version` from the round's decrypted FedAvg average."""
        ...

    def saved_state(self) -> dict[str, np.ndarray]:
        """Everything a restart needs to resume where it is (arrays for safetensors)."""
        ...

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Resume from `saved_state()`."""
        ...


class SiteLearner:
    """Local training and the global model's updates of one site (see the module docstring)."""

    def __init__(self, model: nn.Module, dataset: StudyDataset, recipe: TrainingRecipe,
                 optimization: FederatedOptimization, *, device: str = "cpu",
                 seed: int = 0) -> None:
        self.model = model
        self.dataset = dataset
        self.recipe = recipe
        self.optimization = optimization
        self.device = device
        self.seed = seed
        self.layout = ParameterLayout.of(model.state_dict())
        trainable, self.batchnorm = value_masks(model, self.layout)
        self.server = ServerOptimizer(optimization, trainable)
        self.global_vector = self.layout.flatten(model.state_dict()).astype(np.float32)
        self.version = 0
        self.local_optimizer = make_optimizer(model, recipe)
        # FedBN: the site's own BatchNorm values, once it has trained.
        self.own_batchnorm: np.ndarray | None = None

    def fit(self, start_epoch: int, epochs: int) -> LocalUpdate:
        """Train E local epochs from the site's model (global progress `start_epoch`)."""
        return train_local(self.model, self.dataset, self.recipe, start_epoch=start_epoch,
                           epochs=epochs, device=self.device, seed=self.seed, progress=False,
                           optimizer=self.local_optimizer,
                           proximal_mu=self.optimization.proximal_mu)

    def upload_vector(self, update: LocalUpdate) -> np.ndarray:
        """The flat vector a site contributes (its whole trained model, BatchNorm included:
        under FedBN the average still gives the global model its BatchNorm for new sites)."""
        vector = self.layout.flatten(update.state)
        if self.optimization.local_batchnorm:
            self.own_batchnorm = vector[self.batchnorm].astype(np.float32)
        return vector

    def adopt(self, average: np.ndarray, version: int) -> None:
        """Global version `version` from its decrypted average: step the server optimiser,
        then load the site's model (global, with the site's own BatchNorm under FedBN)."""
        if version != self.version + 1 and self.optimization.stateful:
            raise ValueError(f"server optimiser at version {self.version} cannot step to "
                             f"{version}: versions must be applied in order")
        self.global_vector = self.server.step(self.global_vector, average)
        self.version = version
        self._load_site_model()

    def _load_site_model(self) -> None:
        load_into(self.model, self.layout, self.site_vector())

    def site_vector(self) -> np.ndarray:
        """The site's model as a flat vector."""
        if self.own_batchnorm is None:
            return self.global_vector
        vector = self.global_vector.copy()
        vector[self.batchnorm] = self.own_batchnorm
        return vector

    def global_state(self) -> dict[str, torch.Tensor]:
        """The global model's floating-point state (for sites that did not train: averaged
        BatchNorm under FedBN)."""
        return self.layout.unflatten(self.global_vector)

    def saved_state(self) -> dict[str, np.ndarray]:
        """Everything needed to resume identically: global model, server state, own BN."""
        state = {"global": self.global_vector,
                 "version": np.array([self.version], dtype=np.int64),
                 **{f"server.{k}": v for k, v in self.server.state_arrays().items()}}
        if self.own_batchnorm is not None:
            state["own_batchnorm"] = self.own_batchnorm
        return state

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Resume from `saved_state` (after a restart)."""
        if state["global"].shape != self.global_vector.shape:
            raise ValueError(f"saved global model has {state['global'].shape[0]} values; this "
                             f"layout has {self.global_vector.shape[0]}")
        self.global_vector = state["global"].astype(np.float32).copy()
        self.version = int(state["version"][0])
        self.server.load_state_arrays({k.removeprefix("server."): v for k, v in state.items()
                                       if k.startswith("server.")})
        if "own_batchnorm" in state:
            self.own_batchnorm = state["own_batchnorm"].astype(np.float32).copy()
        self._load_site_model()
