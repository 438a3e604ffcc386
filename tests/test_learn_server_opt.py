"""Server optimisers run at every site: identical inputs give identical models and state,
replaying published versions equals having run throughout, and the configuration is checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ucadi.learn import StudyDataset, TrainingRecipe
from ucadi.learn.server_opt import (
    FederatedOptimization,
    OptimizationConfigError,
    ServerOptimizer,
    announced_optimization,
)
from ucadi.learn.site_learner import SiteLearner, value_masks
from ucadi.learn.train import ProximalTerm
from ucadi.lwe import generate_secret_key
from ucadi.lwe.codec import FixedPointCodec, plaintext_fedavg
from ucadi.lwe.integrity import encode_site_update
from ucadi.lwe.stream import decrypt_fedavg_file, encrypt_to_file, sum_files
from ucadi.model.layout import ParameterLayout, initial_model

RNG = np.random.default_rng(7)


def averages(count: int, size: int) -> list[np.ndarray]:
    return [RNG.normal(0, 0.5, size).astype(np.float32) for _ in range(count)]


def test_fedavg_with_unit_server_lr_publishes_the_average_itself() -> None:
    optimizer = ServerOptimizer(FederatedOptimization(), np.ones(5, dtype=bool))
    average = np.arange(5, dtype=np.float32)
    assert np.array_equal(optimizer.step(np.zeros(5, np.float32), average), average)
    assert not FederatedOptimization().stateful
    assert FederatedOptimization(server="fedavg", server_lr=2.0).stateful


def test_fedavgm_follows_server_momentum_by_hand() -> None:
    config = FederatedOptimization(server="fedavgm", server_lr=0.5, beta1=0.9)
    optimizer = ServerOptimizer(config, np.ones(3, dtype=bool))
    x = np.zeros(3, np.float32)
    a1, a2 = np.array([1, 2, 3], np.float32), np.array([2, 2, 2], np.float32)
    x1 = optimizer.step(x, a1)
    assert np.allclose(x1, 0.5 * a1)
    x2 = optimizer.step(x1, a2)
    m2 = 0.9 * a1 + (a2 - x1)
    assert np.allclose(x2, x1 + 0.5 * m2)


def test_fedadam_moves_parameters_and_leaves_buffers_at_the_average() -> None:
    config = FederatedOptimization(server="fedadam", server_lr=0.1, beta1=0.9, beta2=0.99,
                                   tau=1e-3)
    trainable = np.array([True, True, False])
    optimizer = ServerOptimizer(config, trainable)
    average = np.array([1.0, -1.0, 5.0], np.float32)
    x = optimizer.step(np.zeros(3, np.float32), average)
    m = 0.1 * average[:2]
    v = 0.01 * average[:2] ** 2
    assert np.allclose(x[:2], 0.1 * m / (np.sqrt(v) + 1e-3))
    assert x[2] == 5.0  # a BatchNorm running statistic: averaged, never optimised


def test_fedyogi_second_moment_moves_by_the_sign_rule() -> None:
    config = FederatedOptimization(server="fedyogi", server_lr=0.1)
    optimizer = ServerOptimizer(config, np.ones(2, dtype=bool))
    optimizer.step(np.zeros(2, np.float32), np.array([1.0, 0.0], np.float32))
    # v starts at 0 < delta^2, so it grows by (1 - beta2) delta^2
    assert np.allclose(optimizer.v, [0.01, 0.0])


@pytest.mark.parametrize("server", ["fedavgm", "fedadam", "fedyogi"])
def test_a_restored_optimizer_continues_bit_identically(server: str) -> None:
    config = FederatedOptimization(server=server, server_lr=0.05)
    steps = averages(4, 50)
    live = ServerOptimizer(config, np.ones(50, dtype=bool))
    x = np.zeros(50, np.float32)
    for average in steps[:2]:
        x = live.step(x, average)
    restored = ServerOptimizer(config, np.ones(50, dtype=bool))
    restored.load_state_arrays({k: v.copy() for k, v in live.state_arrays().items()})
    y = x.copy()
    for average in steps[2:]:
        x, y = live.step(x, average), restored.step(y, average)
    assert x.tobytes() == y.tobytes()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(
        live.state_arrays().values(), restored.state_arrays().values(), strict=True))


def test_configuration_errors_name_the_key_and_what_is_accepted() -> None:
    with pytest.raises(OptimizationConfigError, match="server 'sgd' is unknown"):
        FederatedOptimization(server="sgd")
    with pytest.raises(OptimizationConfigError, match=r"beta1 is 1\.5; it must be in \[0, 1\)"):
        FederatedOptimization.from_dict({"beta1": 1.5})
    with pytest.raises(OptimizationConfigError, match=r"optimizer keys \['lr'\]"):
        FederatedOptimization.from_dict({"lr": 1})
    with pytest.raises(OptimizationConfigError, match="local_batchnorm is 'yes'; expected true"):
        FederatedOptimization.from_dict({"local_batchnorm": "yes"})
    with pytest.raises(OptimizationConfigError, match="server_lr is 'fast'; expected a float"):
        FederatedOptimization.from_dict({"server_lr": "fast"})


def test_the_announced_configuration_round_trips_with_its_digest() -> None:
    config = FederatedOptimization(server="fedadam", server_lr=0.01, proximal_mu=0.1)
    assert announced_optimization(config.to_json()) == config
    assert announced_optimization(config.to_json()).digest == config.digest
    assert announced_optimization("") == FederatedOptimization()
    assert FederatedOptimization().digest != config.digest


def test_plaintext_fedavg_is_bit_identical_to_decrypting_the_encrypted_sum(tmp_path) -> None:
    secret = generate_secret_key()
    codec = FixedPointCodec.for_parameters(secret.params)
    vectors = [RNG.normal(0, 1, 3000) for _ in range(3)]
    weights = [30, 17, 64]
    paths = []
    for i, (vector, weight) in enumerate(zip(vectors, weights, strict=True)):
        paths.append(tmp_path / f"{i}.lwe")
        encrypt_to_file(paths[-1], secret, encode_site_update(vector, weight, codec, secret, 1,
                                                              f"site{i}"),
                        layout_hash=bytes(32), round_number=1)
    sum_files(paths, tmp_path / "sum.lwe")
    decrypted, total = decrypt_fedavg_file(secret, tmp_path / "sum.lwe", codec)
    simulated = plaintext_fedavg(vectors, weights, codec, secret.params)
    assert total == sum(weights)
    assert decrypted.tobytes() == simulated.tobytes()


def _learner(records, config: FederatedOptimization) -> SiteLearner:
    recipe = TrainingRecipe(lr=0.05, batch_size=4, total_epochs=4, warmup_epochs=1)
    model = initial_model("densenet3d", "cpu-small", 2, 0)
    from ucadi.ct import PreprocessConfig

    dataset = StudyDataset(records, PreprocessConfig(slices=16, size=(32, 32)), "binary",
                           train=True, seed=0)
    return SiteLearner(model, dataset, recipe, config)


def test_a_late_joiner_replaying_versions_holds_the_same_global_state(tiny_cohort) -> None:
    from ucadi.ct.synth import read_manifest

    records = [r for r in read_manifest(tiny_cohort) if r.split == "train"][:4]
    config = FederatedOptimization(server="fedadam", server_lr=0.01)
    early = _learner(records, config)
    size = early.global_vector.size
    published = [early.global_vector + RNG.normal(0, 0.01, size).astype(np.float32)
                 for _ in range(3)]
    for version, average in enumerate(published, start=1):
        early.adopt(average, version)
    late = _learner(records, config)
    for version, average in enumerate(published, start=1):
        late.adopt(average, version)
    restarted = _learner(records, config)
    restarted.restore({k: v.copy() for k, v in early.saved_state().items()})
    for learner in (late, restarted):
        assert learner.global_vector.tobytes() == early.global_vector.tobytes()
        for name, array in early.saved_state().items():
            assert learner.saved_state()[name].tobytes() == array.tobytes(), name
    with pytest.raises(ValueError, match="versions must be applied in order"):
        _learner(records, config).adopt(published[1], 2)


def test_fedbn_keeps_the_sites_batchnorm_and_publishes_the_average_for_others(
        tiny_cohort) -> None:
    from ucadi.ct.synth import read_manifest

    records = [r for r in read_manifest(tiny_cohort) if r.split == "train"][:4]
    learner = _learner(records, FederatedOptimization(local_batchnorm=True))
    _, batchnorm = value_masks(learner.model, learner.layout)
    update = learner.fit(0, 1)
    mine = learner.upload_vector(update)
    average = (mine + 1.0).astype(np.float32)
    learner.adopt(average, 1)
    site = learner.layout.flatten(learner.model.state_dict())
    assert np.array_equal(site[batchnorm], mine[batchnorm].astype(np.float32))
    assert np.array_equal(site[~batchnorm], average[~batchnorm])
    assert np.array_equal(learner.global_vector, average)


def test_fedprox_keeps_local_weights_closer_to_the_global_model(tiny_cohort) -> None:
    from ucadi.ct.synth import read_manifest

    records = [r for r in read_manifest(tiny_cohort) if r.split == "train"][:4]
    distances = {}
    for mu in (0.0, 50.0):
        learner = _learner(records, FederatedOptimization(proximal_mu=mu))
        start = learner.layout.flatten(learner.model.state_dict())
        learner.fit(0, 2)
        moved = learner.layout.flatten(learner.model.state_dict()) - start
        trainable, _ = value_masks(learner.model, learner.layout)
        distances[mu] = float(np.linalg.norm(moved[trainable]))
    assert distances[50.0] < 0.8 * distances[0.0]


def test_the_proximal_gradient_is_mu_times_the_distance() -> None:
    layer = torch.nn.Linear(2, 1, bias=False)
    term = ProximalTerm.around(layer, 0.5)
    with torch.no_grad():
        layer.weight += 2.0
    layer.weight.grad = torch.zeros_like(layer.weight)
    term.add_gradient(layer)
    assert torch.allclose(layer.weight.grad, torch.full_like(layer.weight, 1.0))


def test_value_masks_split_parameters_buffers_and_batchnorm() -> None:
    model = initial_model("densenet3d", "cpu-small", 2, 0)
    layout = ParameterLayout.of(model.state_dict())
    trainable, batchnorm = value_masks(model, layout)
    parameters = sum(p.numel() for p in model.parameters())
    assert int(trainable.sum()) == parameters
    assert batchnorm.any() and (batchnorm & ~trainable).any()  # running statistics
