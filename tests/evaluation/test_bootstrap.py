import numpy as np
import pytest

from tlcr.evaluation.bootstrap import paired_bootstrap


def test_constant_difference_has_a_point_interval() -> None:
    interval = paired_bootstrap(np.full((3, 10), 0.25))
    assert (interval.mean, interval.low, interval.high) == pytest.approx((0.25, 0.25, 0.25))
    assert interval.significant and (interval.n_seeds, interval.n_prompts) == (3, 10)


def test_interval_matches_the_normal_approximation_for_many_prompts() -> None:
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.1, 1.0, size=(1, 400))
    interval = paired_bootstrap(diffs, n_resamples=4000)
    half_width = 1.96 * diffs.std(ddof=1) / np.sqrt(diffs.size)
    assert interval.high - interval.low == pytest.approx(2 * half_width, rel=0.1)
    assert interval.low < diffs.mean() < interval.high


def test_seed_to_seed_spread_widens_the_interval() -> None:
    prompts = np.zeros((3, 50))
    spread = prompts + np.array([[-1.0], [0.0], [1.0]])
    assert paired_bootstrap(prompts).high == 0.0
    wide = paired_bootstrap(spread)
    assert wide.low < -0.3 and wide.high > 0.3 and not wide.significant


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((0, 3)), np.array([[np.nan, 1.0]])])
def test_bad_input_is_named(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="differences"):
        paired_bootstrap(bad)
