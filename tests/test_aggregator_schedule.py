"""The learning-rate schedule every site runs comes from the federation's announced plan:
R rounds of E local epochs decay over R x E epochs unless the recipe says otherwise."""

from __future__ import annotations

import copy
import json

import pytest

from services.aggregator.config import DEFAULTS, build_federation_config


def announced_recipe(rounds: int, local_epochs: int, recipe: dict | None = None) -> dict:
    config = copy.deepcopy(DEFAULTS)
    config["federation"].update(total_rounds=rounds, local_epochs=local_epochs)
    config["encryption"]["enabled"] = False
    config["model"]["recipe"] = recipe or {}
    return json.loads(build_federation_config(config).model["recipe_json"])


@pytest.mark.parametrize(("rounds", "local_epochs", "recipe", "expected"), [
    (30, 2, None, (60, 3)),
    (200, 1, None, (200, 5)),
    (4, 1, None, (4, 0)),
    (30, 1, {"total_epochs": 50, "warmup_epochs": 2}, (50, 2)),
    (0, 1, None, (100, 5)),
], ids=["30x2", "paper-200", "short", "recipe-says", "open-ended"])
def test_schedule_spans_the_federations_epochs(rounds: int, local_epochs: int,
                                               recipe: dict | None,
                                               expected: tuple[int, int]) -> None:
    announced = announced_recipe(rounds, local_epochs, recipe)
    assert (announced["total_epochs"], announced["warmup_epochs"]) == expected
