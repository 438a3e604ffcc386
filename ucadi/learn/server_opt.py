"""Server optimisers that run at every site: the central side only adds ciphertexts.

Every site decrypts the same FedAvg average, so the "server" update of Reddi et al.
("Adaptive Federated Optimization", ICLR 2021) can run where the sum is decrypted: each site
applies it to the same inputs, in the same order, with the same float32 arithmetic, and so
holds the same global model and optimiser state without any party seeing a plaintext model
centrally. With x the global model and avg the decrypted FedAvg of the sites' trained models,
the pseudo-gradient is delta = avg - x, and

- fedavg:  x <- x + lr * delta                    (lr 1: x = avg, the classic FedAvg)
- fedavgm: m <- beta1 m + delta;  x <- x + lr m    (server momentum, Hsu et al. 2019)
- fedadam: m <- beta1 m + (1-beta1) delta;  v <- beta2 v + (1-beta2) delta^2;
           x <- x + lr m / (sqrt(v) + tau)
- fedyogi: as fedadam, v <- v - (1-beta2) delta^2 sign(v - delta^2)

only on trainable parameters; buffers (BatchNorm running statistics) take the average as is.
The state is a pure function of the initial model and the sequence of decrypted averages, so
a site that joins late replays the published versions and a restarted site reloads what it
saved: both end bit-identical to the sites that ran throughout.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ucadi.errors import UcadiError

SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi")


class OptimizationConfigError(UcadiError):
    """A federation.optimizer value is unknown or out of range."""


@dataclass(frozen=True)
class FederatedOptimization:
    """How the federation learns beyond plain FedAvg: the server optimiser every site runs,
    FedProx's proximal term and FedBN's site-local BatchNorm (`federation.optimizer`)."""

    server: str = "fedavg"
    server_lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    # FedProx (Li et al., MLSys 2020): mu/2 ||w - w_global||^2 added to the local loss.
    proximal_mu: float = 0.0
    # FedBN (Li et al., ICLR 2021): BatchNorm layers stay local at each site.
    local_batchnorm: bool = False

    def __post_init__(self) -> None:
        if self.server not in SERVER_OPTIMIZERS:
            raise OptimizationConfigError(f"federation.optimizer.server {self.server!r} is "
                                          f"unknown; choose one of {SERVER_OPTIMIZERS}")
        checks = (("server_lr", self.server_lr > 0, "> 0"),
                  ("beta1", 0 <= self.beta1 < 1, "in [0, 1)"),
                  ("beta2", 0 <= self.beta2 < 1, "in [0, 1)"),
                  ("tau", self.tau > 0, "> 0"),
                  ("proximal_mu", self.proximal_mu >= 0, ">= 0"))
        for name, ok, accepted in checks:
            if not ok:
                raise OptimizationConfigError(f"federation.optimizer.{name} is "
                                              f"{getattr(self, name)!r}; it must be {accepted}")

    @property
    def stateful(self) -> bool:
        """Whether the global model depends on more than the latest average (then a site
        that joins late replays every published version)."""
        return self.server != "fedavg" or self.server_lr != 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy."""
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (as announced to sites)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON: what sites compare every round."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def describe(self) -> str:
        """One line for logs and reports."""
        text = self.server if self.server == "fedavg" and self.server_lr == 1.0 else (
            f"{self.server} (server lr {self.server_lr:g}"
            + (f", beta1 {self.beta1:g}" if self.server != "fedavg" else "")
            + (f", beta2 {self.beta2:g}, tau {self.tau:g}"
               if self.server in ("fedadam", "fedyogi") else "") + ")")
        if self.proximal_mu:
            text += f" + FedProx (mu {self.proximal_mu:g})"
        if self.local_batchnorm:
            text += " + FedBN"
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FederatedOptimization:
        """From the config section or its announced JSON; unknown keys are named."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise OptimizationConfigError(f"unknown federation.optimizer keys {unknown}; "
                                          f"known: {sorted(known)}")
        types = {"server": str, "local_batchnorm": bool}
        values: dict[str, Any] = {}
        for key, value in data.items():
            kind = types.get(key, float)
            if kind is bool and not isinstance(value, bool):
                raise OptimizationConfigError(f"federation.optimizer.{key} is {value!r}; "
                                              "expected true or false")
            try:
                values[key] = kind(value)
            except (TypeError, ValueError):
                raise OptimizationConfigError(
                    f"federation.optimizer.{key} is {value!r}; expected a "
                    f"{kind.__name__}") from None
        return cls(**values)


class ServerOptimizer:
    """The server update on flat float32 vectors; `trainable` marks the values it moves."""

    def __init__(self, config: FederatedOptimization, trainable: np.ndarray) -> None:
        self.config = config
        self.trainable = np.asarray(trainable, dtype=bool)
        size = int(self.trainable.sum())
        self.m = np.zeros(size, dtype=np.float32) if config.server != "fedavg" else None
        self.v = np.zeros(size, dtype=np.float32) if config.server in (
            "fedadam", "fedyogi") else None
        self.steps = 0

    def step(self, current: np.ndarray, average: np.ndarray) -> np.ndarray:
        """The next global model from the current one and the decrypted FedAvg average."""
        average = np.asarray(average, dtype=np.float32)
        self.steps += 1
        if not self.config.stateful:
            return average.copy()
        c = self.config
        nxt = average.copy()
        x = current[self.trainable].astype(np.float32)
        delta = average[self.trainable] - x
        lr = np.float32(c.server_lr)
        if c.server == "fedavg":
            x += lr * delta
        elif c.server == "fedavgm":
            assert self.m is not None
            self.m *= np.float32(c.beta1)
            self.m += delta
            x += lr * self.m
        else:
            assert self.m is not None and self.v is not None
            self.m *= np.float32(c.beta1)
            self.m += np.float32(1 - c.beta1) * delta
            square = delta * delta
            if c.server == "fedadam":
                self.v *= np.float32(c.beta2)
                self.v += np.float32(1 - c.beta2) * square
            else:
                self.v -= np.float32(1 - c.beta2) * square * np.sign(self.v - square)
            x += lr * self.m / (np.sqrt(self.v) + np.float32(c.tau))
        nxt[self.trainable] = x
        return nxt

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The optimiser's state as named arrays (saved beside the global model)."""
        state = {"steps": np.array([self.steps], dtype=np.int64)}
        if self.m is not None:
            state["m"] = self.m
        if self.v is not None:
            state["v"] = self.v
        return state

    def load_state_arrays(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state_arrays` returned."""
        self.steps = int(state["steps"][0])
        for name in ("m", "v"):
            mine = getattr(self, name)
            if mine is None:
                continue
            if name not in state or state[name].shape != mine.shape:
                raise OptimizationConfigError(f"saved server-optimizer state lacks {name!r} "
                                              f"of shape {mine.shape} for {self.config.server}")
            setattr(self, name, state[name].astype(np.float32).copy())


def announced_optimization(optimizer_json: str) -> FederatedOptimization:
    """The configuration a federation announced (ModelSpec.optimizer_json; empty = FedAvg)."""
    try:
        data = json.loads(optimizer_json) if optimizer_json else {}
    except json.JSONDecodeError as exc:
        raise OptimizationConfigError(f"announced optimizer configuration is not JSON: {exc}"
                                      ) from None
    return FederatedOptimization.from_dict(data)
