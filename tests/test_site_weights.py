"""Realistic site sizes: FedAvg weights are counted in units that keep the federation's largest
site (federation.max_site_cases) within the parameter set's integer weight, and a site larger
than the federation was set up for is refused at join with one line naming the setting."""

from __future__ import annotations

import numpy as np
import pytest
from test_aggregator_rounds import VALUES, Clock, coordinator, upload

from services.aggregator.config import DEFAULTS, build_federation_config
from ucadi.errors import UcadiError
from ucadi.lwe import generate_secret_key
from ucadi.lwe.codec import FixedPointCodec, encode_update, site_weight, weight_unit
from ucadi.lwe.errors import EncodingError
from ucadi.lwe.stream import decrypt_fedavg_file


@pytest.fixture(scope="module")
def secret():
    return generate_secret_key()


def test_weights_are_exact_while_the_largest_site_fits_and_in_units_beyond() -> None:
    assert weight_unit(1000, 1000) == 1 and site_weight(1095, 1) == 1095
    assert weight_unit(5000, 1000) == 5
    assert site_weight(5000, 5) == 1000
    assert site_weight(32, 5) == 6 and site_weight(2, 5) == 1  # never 0: every site counts


def test_a_5000_case_site_trains_beside_a_small_one_with_proportional_weights(tmp_path,
                                                                              secret) -> None:
    coord = coordinator(tmp_path / "agg", secret, Clock(), max_site_cases=5000)
    unit = coord.config.weight_unit
    assert unit == 5
    codec = FixedPointCodec.for_parameters(secret.params)
    with pytest.raises(EncodingError, match="weight"):  # what a raw 5,000 would do
        encode_update(np.zeros(VALUES), 5000, codec, secret.params)
    rng = np.random.default_rng(1)
    models = {"big": rng.normal(0, 1, VALUES), "small": rng.normal(0, 1, VALUES)}
    cases = {"big": 5000, "small": 30}
    for site in models:
        coord.join(site, cases[site])
    coord.step()
    for site in models:
        upload(coord, secret, tmp_path, site, models[site], site_weight(cases[site], unit))
    coord.step()
    average, total = decrypt_fedavg_file(secret, coord.store.global_path(1), codec)
    assert total == 1000 + 6
    exact = (5000 * models["big"] + 30 * models["small"]) / 5030
    assert np.max(np.abs(average - exact)) < 1e-3  # the 30-case site weighs 6 units, not 5.99


def test_a_site_larger_than_the_federation_takes_is_refused_at_join(tmp_path, secret) -> None:
    coord = coordinator(tmp_path / "agg", secret, Clock())
    with pytest.raises(UcadiError, match=r"trains on 1095 cases; .* up to 1000 "
                                         r"\(federation.max_site_cases\)"):
        coord.join("wuhan", 1095)


def test_max_site_cases_is_checked_and_sets_the_announced_unit() -> None:
    config = {section: dict(values) for section, values in DEFAULTS.items()}
    config["encryption"]["key_id"] = "00" * 16
    config["federation"]["max_site_cases"] = 5000
    assert build_federation_config(config).weight_unit == 5
    config["federation"]["local_epochs"] = 2
    assert build_federation_config(config).weight_unit == 10
    config["federation"]["max_site_cases"] = "many"
    with pytest.raises(UcadiError, match="max_site_cases is 'many'; it must be a whole number"):
        build_federation_config(config)
