"""The aggregator's configuration: defaults, and the federation settings derived from them."""

from __future__ import annotations

import json
from typing import Any

from services.aggregator.contracts import FederationConfig
from ucadi.errors import UcadiError

# Every setting of `ucadi serve aggregator --config FILE`; UCADI_<SECTION>__<KEY> overrides.
DEFAULTS: dict[str, Any] = {
    "federation": {
        "id": "ucadi",
        # Uploads needed to seal a round (the quorum).
        "min_sites": 2,
        # Rounds to run; 0 = open-ended.
        "total_rounds": 5,
        # Local epochs per round: the synchronisation interval (the paper syncs every epoch).
        "local_epochs": 1,
        # Upload deadline per round, seconds after it opens.
        "round_timeout_s": 600.0,
        # A site not heard from for this long is not expected in the next round.
        "liveness_timeout_s": 60.0,
        "max_upload_mb": 1024,
        # The largest site's training cases: FedAvg weights (cases x local epochs) are counted
        # in units that keep that site within the parameter set's weight limit; a site with
        # more cases is refused at join with a message naming this setting.
        "max_site_cases": 1000,
        # How the federation learns beyond plain FedAvg, announced to every site with the
        # model (ucadi.learn.server_opt.FederatedOptimization; docs/federated-optimisation.md):
        # server: fedavg | fedavgm | fedadam | fedyogi, run identically at every site on the
        # decrypted average; server_lr, beta1 (momentum), beta2, tau; proximal_mu (FedProx,
        # 0 = off); local_batchnorm (FedBN: BatchNorm layers stay at each site).
        # Pairwise-cancelling masks on every ciphertext (docs/design/multiparty.md): no single
        # party, not this central side and not one site, reads a site's update (on by
        # default; false = the shared-key mode, where any site's key reads any upload it
        # obtains; needs min_sites >= 2). mask_threshold: t, the sites whose shares
        # unmask a round (0 = a majority of the round's sites); mask_phase_timeout_s: how long
        # each masking phase waits for a straggler before going on without it.
        # mask_neighbours: SecAgg+'s sparse graph (Bell et al. 2020; ucadi/lwe/neighbours.py):
        # 0 = every site pairs with every other (the complete graph); an even k >= 2 = each
        # site pairs with and shares among k neighbours, t then out of those and itself (0 =
        # a majority); "auto" = Bell et al.'s k and t for the key set's size. (A text setting,
        # so that it takes "auto"; a number is read as its text.)
        "pairwise_masks": True,
        "mask_threshold": 0,
        "mask_neighbours": "0",
        "mask_phase_timeout_s": 60.0,
        "optimizer": {"server": "fedavg", "server_lr": 1.0, "beta1": 0.9, "beta2": 0.99,
                      "tau": 1e-3, "proximal_mu": 0.0, "local_batchnorm": False},
    },
    "model": {
        "arch": "densenet3d",
        "preset": "cpu-small",
        "task": "binary",
        "init_seed": 0,
        # TrainingRecipe overrides (lr, weight_decay, total_epochs, ...).
        "recipe": {},
    },
    "encryption": {
        # false = plaintext updates the aggregator can read: only for benchmarking what
        # encryption costs; never for hospitals.
        "enabled": True,
        # LWE parameter set id; empty = the library default.
        "parameter_set": "",
        # Active LWE key id (made by the custodian with `ucadi keys create`); empty: the key
        # service's active key, learnt at start (server.key_wait_s).
        "key_id": "",
    },
    "server": {
        "address": "127.0.0.1:7443",
        "metrics_address": "127.0.0.1:9100",
        # Plaintext gRPC health-only port for Kubernetes probes ("" = none).
        "health_address": "",
        "tls_dir": "",
        "state_dir": "var/aggregator",
        # The crypto service's SumService, HOST:PORT; several, comma-separated: replicas that
        # each sum a block range. "" = single node: the aggregator adds the ciphertexts itself.
        "crypto_address": "127.0.0.1:7444",
        # The key service that approves joining sites (a wrapped key for the site must exist);
        # "" = the first crypto_address. Required on a single node.
        "key_address": "",
        # Seconds to wait at start for the key service's active key when encryption.key_id is
        # empty (the aggregator then takes the id the custodian activated).
        "key_wait_s": 3600.0,
        # Sites send their ciphertexts to the SumService themselves (at the crypto address they
        # fetch their key from) and only record them here, and fetch each sealed sum (global
        # version) there too, so no ciphertext byte passes through the aggregator. Applies with
        # one crypto_address; false, several replicas or a single node: sites upload and
        # download here and the aggregator passes the ciphertexts on.
        "site_contributions": True,
        # With site_contributions, global versions are stored by the sum service (durable,
        # on its volume) and DownloadGlobal streams them on from there; true also keeps a copy
        # of each in this aggregator's state folder, fetched in the background at the lowest
        # CPU priority (a second copy, e.g. where the sum service's volume is not persistent).
        "copy_global_versions": False,
    },
}


def build_federation_config(config: dict[str, Any]) -> FederationConfig:
    """Federation settings from a loaded config, with the model's layout hash computed."""
    from ucadi.learn.recipe import TrainingRecipe
    from ucadi.learn.server_opt import FederatedOptimization
    from ucadi.lwe.params import DEFAULT_PARAMETER_SET
    from ucadi.model.layout import ParameterLayout, initial_model
    from ucadi.wire.plain_update import PLAINTEXT_SET

    fed, model, enc = config["federation"], config["model"], config["encryption"]
    enabled = bool(enc["enabled"])
    if enabled and not enc["key_id"]:
        raise UcadiError("encryption.key_id is empty and no key service was asked for it: set "
                         "server.crypto_address or server.key_address and server.tls_dir, or "
                         "set the key id (config file or UCADI_ENCRYPTION__KEY_ID)")
    if int(fed["min_sites"]) < 1:
        raise UcadiError(f"federation.min_sites is {fed['min_sites']}; it must be at least 1")
    if enabled and bool(fed["pairwise_masks"]) and int(fed["min_sites"]) < 2:
        raise UcadiError("federation.min_sites is 1, but pairwise masks (federation."
                         "pairwise_masks, on by default) need at least 2 sites in a round: set "
                         "min_sites to 2 or more, or pairwise_masks: false for the shared-key "
                         "mode")
    recipe = TrainingRecipe.from_dict({"task": model["task"], **_schedule(fed, model["recipe"]),
                                       **model["recipe"]})
    optimization = FederatedOptimization.from_dict(fed.get("optimizer"))
    net = initial_model(model["arch"], model["preset"], len(recipe.class_names),
                        int(model["init_seed"]))
    layout = ParameterLayout.of(net.state_dict())
    return FederationConfig(
        federation_id=fed["id"],
        model={"arch": model["arch"], "preset": model["preset"], "task": model["task"],
               "init_seed": int(model["init_seed"]),
               "recipe_json": json.dumps(recipe.to_dict(), sort_keys=True),
               "layout_hash": layout.hash, "value_count": layout.value_count,
               "optimizer_json": optimization.to_json(),
               "optimizer_digest": optimization.digest},
        encryption={"enabled": enabled,
                    "parameter_set": (enc["parameter_set"] or DEFAULT_PARAMETER_SET) if enabled
                    else PLAINTEXT_SET,
                    "key_id": enc["key_id"] if enabled else ""},
        min_sites=int(fed["min_sites"]), total_rounds=int(fed["total_rounds"]),
        local_epochs=int(fed["local_epochs"]), round_timeout_s=float(fed["round_timeout_s"]),
        liveness_timeout_s=float(fed["liveness_timeout_s"]),
        max_upload_bytes=int(float(fed["max_upload_mb"]) * (1 << 20)),
        max_site_cases=_positive_int(fed, "max_site_cases"),
        pairwise_masks=bool(fed["pairwise_masks"]) and enabled,
        mask_threshold=int(fed["mask_threshold"]),
        mask_neighbours=_mask_neighbours(fed.get("mask_neighbours", "0")),
        mask_phase_timeout_s=float(fed["mask_phase_timeout_s"]))


def _mask_neighbours(value: Any) -> int:
    """federation.mask_neighbours as FederationConfig keeps it: 0, an even k >= 2, or -1
    for "auto"."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return -1
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value == 1 \
            or value % 2:
        raise UcadiError(f"federation.mask_neighbours is {value!r}; it must be 0 (every site "
                         "pairs with every other), an even whole number k >= 2 (neighbours "
                         "per site), or \"auto\" (Bell et al.'s k for the round's size)")
    return value


def _positive_int(section: dict[str, Any], key: str) -> int:
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UcadiError(f"federation.{key} is {value!r}; it must be a whole number >= 1")
    return value


def _schedule(fed: dict[str, Any], recipe: dict[str, Any]) -> dict[str, int]:
    """The learning-rate schedule's length from the federation's plan: a federation of R rounds
    of E local epochs trains R x E epochs, so the cosine decay ends with its last round (the
    recipe's own default is the paper's 100 centralised epochs). Warm-up keeps the paper's
    share, 5 of 100 epochs. Nothing when the recipe sets total_epochs or the federation is
    open-ended (total_rounds 0)."""
    epochs = int(fed["total_rounds"]) * int(fed["local_epochs"])
    if "total_epochs" in recipe or epochs < 1:
        return {}
    return {"total_epochs": epochs, "warmup_epochs": min(5, epochs // 20)}
