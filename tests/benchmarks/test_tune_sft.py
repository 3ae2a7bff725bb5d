"""benchmarks/tune_sft.py: the pick over seeds on hand-made results, and the folder names compare_methods reads."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from tlcr.demo import DemoConfig


@pytest.fixture(scope="module")
def tune(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("tune_sft")


def _result(seed: int, point: dict[str, float], oracle: float) -> dict[str, Any]:
    summary = {"oracle_score": oracle, "helpful": 0.5, "wrong": 0.1, "style_faults": 0.1, "details": 0.9,
               "tokens": 20.0}
    return {"seed": seed, "point": point, "summary": summary}


def test_the_best_worst_seed_wins_over_a_higher_mean_with_an_outlier_seed(tune: ModuleType) -> None:
    steady, spiky = tune.POINTS[0], tune.POINTS[1]
    results = [_result(0, steady, 0.30), _result(1, steady, 0.32), _result(0, spiky, 0.05), _result(1, spiky, 0.65)]
    chosen = tune.choose(results)
    assert chosen["chosen"] == tune.point_name(steady)
    row = chosen["table"][tune.point_name(spiky)]
    assert row["oracle_score"] == pytest.approx(0.35)  # a higher mean than steady, but one seed far behind
    assert row["worst_oracle"] == pytest.approx(0.05) and row["spread"] == pytest.approx(0.60)


def test_compare_methods_finds_the_tuned_sft_policy_of_the_demo_recipe(tune: ModuleType,
                                                                       load_benchmark: Callable[[str], ModuleType],
                                                                       ) -> None:
    compare = load_benchmark("compare_methods")
    config = DemoConfig()
    recipe = {"sft_epochs": config.sft_epochs, "sft_learning_rate": config.sft_learning_rate}
    assert recipe in list(tune.POINTS)  # the demo's recipe is one of the tuned points
    assert compare.tuned_sft_name(config) == tune.point_name(recipe)
