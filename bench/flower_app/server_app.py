"""Timed FedAvg ServerApp (no training) for bench/flower_deployment.py."""

import json
import os
import time
import traceback
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


class TimedFedAvg(FedAvg):
    """FedAvg recording wall time from configure_train to aggregate_train."""

    def __init__(self, clients, **kwargs):
        super().__init__(**kwargs)
        self.clients = clients
        self.durations = []
        self._t0 = 0.0

    def configure_train(self, server_round, arrays, config, grid):
        """Sample all nodes (waits for them), then start the round clock."""
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._t0 = time.perf_counter()
        return messages

    def aggregate_train(self, server_round, replies):
        """Check every node answered, aggregate as FedAvg, stop the clock."""
        replies = list(replies)
        errors = [m.error.reason for m in replies if m.has_error()]
        if errors or len(replies) != self.clients:
            raise RuntimeError(
                f"round {server_round}: {len(replies)} replies of {self.clients}, "
                f"errors: {errors}"
            )
        aggregated = super().aggregate_train(server_round, replies)
        self.durations.append(time.perf_counter() - self._t0)
        return aggregated


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the timed rounds and write the per-round seconds as JSON."""
    cfg = context.run_config
    out = Path(str(cfg["result-path"]))
    try:
        clients, rounds = int(cfg["num-clients"]), int(cfg["num-rounds"])
        weights = np.random.default_rng(0).standard_normal(
            int(cfg["num-params"]), dtype=np.float32
        )
        strategy = TimedFedAvg(
            clients,
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=clients,
            min_available_nodes=clients,
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord([weights]),
            num_rounds=rounds,
            timeout=float(cfg["round-timeout"]),
        )
        if len(strategy.durations) != rounds:
            raise RuntimeError(f"{len(strategy.durations)} of {rounds} rounds timed")
        final = result.arrays.to_numpy_ndarrays()[0]
        if not np.allclose(final, weights):
            raise RuntimeError("FedAvg of echoed parameters differs from the input")
        payload = {"round_seconds": strategy.durations}
    except BaseException:
        payload = {"error": traceback.format_exc()}
        raise
    finally:
        tmp = out.with_suffix(".part")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, out)
