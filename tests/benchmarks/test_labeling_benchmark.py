"""benchmarks/labeling.py: its pure-Python DP baselines are correct, and the diff benchmark agrees with them."""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import Levenshtein
import pytest

from tlcr.labeling.token_labels import label_tokens


@pytest.fixture(scope="module")
def bench(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("labeling")


CASES = [([], []), ([], [1, 2]), ([1, 2], []), ([1, 2, 3], [1, 2, 3]), ([1, 2, 3], [1, 9, 3]),
         ([1, 2, 3, 4], [1, 4]), ([5, 1, 2], [1, 2, 5, 6]), ([7, 8, 9, 7, 8], [8, 7, 9, 9, 7, 1])]


@pytest.mark.parametrize(("rejected", "revised"), CASES)
def test_dp_baselines_compute_the_levenshtein_distance_and_label_every_edit(
        bench: ModuleType, rejected: list[int], revised: list[int]) -> None:
    expected = Levenshtein.distance(rejected, revised)
    for dp in (bench.dp_edit_labels, bench.dp_edit_labels_tuples):
        distance, rejected_labels, revised_labels = dp(rejected, revised)
        assert distance == expected
        # each negative or positive token is one edit; a substitution makes one of each
        assert rejected_labels.count(0.0) + revised_labels.count(1.0) >= distance
        assert rejected_labels.count(0.0) <= distance and revised_labels.count(1.0) <= distance
        assert set(rejected_labels) <= {0.0, 0.5} and set(revised_labels) <= {0.5, 1.0}


def test_dp_baseline_labels_equal_label_tokens_where_the_alignment_is_unique(bench: ModuleType) -> None:
    rejected, revised = [1, 2, 3, 4, 5], [1, 2, 9, 4, 5, 6]
    _, rejected_labels, revised_labels = bench.dp_edit_labels(rejected, revised)
    labels = label_tokens(rejected, revised)
    assert (rejected_labels, revised_labels) == (labels.rejected_labels, labels.revised_labels)


def test_token_diff_benchmark_on_real_pairs(bench: ModuleType, hh_harmless_test: Path, tmp_path: Path) -> None:
    subset = tmp_path / "pairs.jsonl.gz"
    with gzip.open(hh_harmless_test, "rt", encoding="utf-8") as src, gzip.open(subset, "wt", encoding="utf-8") as dst:
        dst.writelines(itertools.islice(src, 40))
    diff = bench.bench_token_diff(subset, None, repeats=1)
    assert diff["pairs"] == 40 and diff["edit_distance_mismatches"] == 0
    assert diff["c_call_only_s"] > 0 and diff["c_call_only_speedup"] == diff["python_dp_s"] / diff["c_call_only_s"]
    assert diff["editops_loop_s"] > 0
    assert diff["speedup_vs_editops_loop"] == diff["editops_loop_s"] / diff["levenshtein_s"]
    # the verdict is on the TLCR release's DP (the anchor), not on the faster textbook DP
    assert bench.print_token_diff(diff) is (diff["speedup_vs_tuples"] >= 200)


def test_editops_loop_baseline_labels_like_label_tokens(bench: ModuleType) -> None:
    for rejected, revised in CASES:
        distance, rejected_labels, revised_labels = bench.editops_labels(rejected, revised)
        labels = label_tokens(rejected, revised)
        assert distance == labels.edit_distance
        assert (rejected_labels, revised_labels) == (labels.rejected_labels, labels.revised_labels)


def test_throughput_targets_and_verdict(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert [bench.target_fraction(c) for c in (1, 64, 65, 256)] == [0.9, 0.9, 0.8, 0.8]
    row = {"concurrency": 256, "workers": 2, "worker_start": "fork", "pairs": 10, "seconds": 1.0, "pairs_per_s": 10.0,
           "ideal_pairs_per_s": 12.0, "fraction_of_ideal": 0.83, "target_fraction": 0.8, "client_cpu_ms_per_pair": 1.0,
           "server_cpu_ms_per_pair": 0.1, "client_cpu_share": 0.5}
    assert bench.print_throughput([row], 0.2) is True
    out = capsys.readouterr().out
    assert "        256        2     10" in out  # concurrency, worker processes, pairs
    assert "(worker processes: fork)" in out
    assert bench.print_throughput([{**row, "concurrency": 64, "target_fraction": 0.9}], 0.2) is False
    assert "MISSED" in capsys.readouterr().out


def test_throughput_run_with_worker_processes(bench: ModuleType) -> None:
    """A small real run through the fake server with 2 worker processes: every pair labelled, CPU counted."""
    [row] = bench.bench_revision_throughput(0.05, [4], waves=3, repeats=1, workers=2, worker_start="spawn")
    assert row["workers"] == 2 and row["worker_start"] == "spawn" and row["pairs"] == 12
    assert row["pairs_per_s"] > 0 and row["client_cpu_ms_per_pair"] > 0
