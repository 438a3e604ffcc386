"""The papers' recipe and its learning-rate schedule over global progress."""

from __future__ import annotations

import math

import pytest

from ucadi.learn.recipe import RecipeError, TrainingRecipe, binary_weights_from_paper, lr_at


def test_schedule_warms_up_linearly_then_anneals_by_cosine_to_zero():
    recipe = TrainingRecipe()
    assert lr_at(recipe, 0) == 0
    assert lr_at(recipe, 2.5) == pytest.approx(0.005)
    assert lr_at(recipe, 5) == pytest.approx(0.01)
    assert lr_at(recipe, 52.5) == pytest.approx(0.005)
    assert lr_at(recipe, 100) == pytest.approx(0.0, abs=1e-12)
    values = [lr_at(recipe, e / 10) for e in range(50, 1001)]
    assert all(a >= b for a, b in zip(values[:-1], values[1:], strict=True))


def test_schedule_is_defined_over_the_whole_run_not_over_one_training_call():
    recipe = TrainingRecipe(total_epochs=30, warmup_epochs=3)
    # A federated site in round 17 (one local epoch per round) is at global epoch 17.
    expected = 0.5 * 0.01 * (1 + math.cos(math.pi * (17.25 - 3) / 27))
    assert lr_at(recipe, 17.25) == pytest.approx(expected)
    assert lr_at(recipe, 17.25) != lr_at(TrainingRecipe(total_epochs=40, warmup_epochs=3), 17.25)


def test_recipe_defaults_are_the_papers_and_round_trip_through_json_form():
    recipe = TrainingRecipe()
    assert (recipe.lr, recipe.momentum, recipe.batch_size, recipe.warmup_epochs,
            recipe.total_epochs) == (0.01, 0.9, 16, 5, 100)
    assert TrainingRecipe(task="four_class").loss_weights == (0.2, 0.2, 0.4, 0.2)
    custom = TrainingRecipe(weight_decay=1e-4, class_weights=(0.3, 0.7))
    assert TrainingRecipe.from_dict(custom.to_dict()) == custom


def test_binary_weights_keep_the_paper_loss_mass_of_the_merged_classes():
    non_covid, covid = binary_weights_from_paper()
    assert non_covid == pytest.approx((0.2 * 342 + 0.4 * 56 + 0.2 * 292) / 690)
    assert covid == 0.2
    assert TrainingRecipe().loss_weights == (non_covid, covid)


def test_invalid_recipes_are_refused_with_what_is_accepted():
    with pytest.raises(RecipeError, match="binary"):
        TrainingRecipe(task="three_class")
    with pytest.raises(RecipeError, match="2 classes"):
        TrainingRecipe(class_weights=(0.2, 0.2, 0.6))
    with pytest.raises(RecipeError, match="warmup"):
        TrainingRecipe(warmup_epochs=10, total_epochs=10)
    with pytest.raises(RecipeError, match="unknown"):
        TrainingRecipe.from_dict({"learning_rate": 0.1})
