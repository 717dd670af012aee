"""PartitionReport: label histograms and the mean total-variation distance, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedloom.data import Dataset, PartitionReport, iid


def test_symmetric_two_client_example() -> None:
    report = PartitionReport.from_labels(
        [np.array([0, 0, 0, 1]), np.array([0, 1, 1, 1])], num_classes=2
    )
    np.testing.assert_array_equal(report.counts, [[3, 1], [1, 3]])
    np.testing.assert_array_equal(report.sizes, [4, 4])
    # global mix (1/2, 1/2); each client is (3/4, 1/4) or its mirror: TV = 1/2 (1/4 + 1/4)
    np.testing.assert_allclose(report.distances, [0.25, 0.25])
    assert report.skew == pytest.approx(0.25)


def test_unequal_sizes_use_the_pooled_mix_and_an_unweighted_mean() -> None:
    report = PartitionReport.from_labels([np.array([0, 0]), np.array([1] * 6)], num_classes=3)
    # pooled mix (2/8, 6/8, 0): client 0 is (1, 0, 0), TV = 1/2 (3/4 + 3/4) = 3/4;
    # client 1 is (0, 1, 0), TV = 1/2 (1/4 + 1/4) = 1/4; mean over clients = 1/2
    np.testing.assert_allclose(report.distances, [0.75, 0.25])
    assert report.skew == pytest.approx(0.5)
    np.testing.assert_array_equal(report.counts, [[2, 0, 0], [0, 6, 0]])


def test_identical_label_mixes_have_zero_skew() -> None:
    report = PartitionReport.from_labels([np.array([0, 1, 2])] * 4, num_classes=3)
    assert report.skew == 0.0


def test_table_lists_clients_counts_distances_and_truncates() -> None:
    labels = [np.array([0, 0, 0, 1]), np.array([0, 1, 1, 1]), np.array([1])]
    report = PartitionReport.from_labels(labels, num_classes=2)
    # pooled mix (4/9, 5/9): TVs are 3/4 - 4/9 = 11/36, 4/9 - 1/4 = 7/36 and 4/9; mean 34/108
    np.testing.assert_allclose(report.distances, [11 / 36, 7 / 36, 4 / 9])
    lines = report.table(max_rows=2).splitlines()
    assert lines[0].split() == ["client", "n", "0", "1", "TV"]
    assert lines[1].split() == ["0", "4", "3", "1", "0.306"]
    assert lines[2].split() == ["1", "4", "1", "3", "0.194"]
    assert lines[3].split() == ["(1", "more)"]
    assert lines[4].split() == ["all", "9", "4", "5"]
    assert lines[5].endswith("0.315")
    assert len(report.table().splitlines()) == 6
    with pytest.raises(ValueError, match="max_rows must be an integer >= 1, got 0"):
        report.table(max_rows=0)


def test_regression_report_has_no_histogram_but_a_table() -> None:
    data = Dataset("r", np.zeros((10, 1)), np.linspace(0, 1, 10), None)
    report = data.split(iid(), clients=2, seed=0, holdout=0.0, test_fraction=0.0).report()
    assert report.counts.shape == (2, 0)
    assert math.isnan(report.skew)
    np.testing.assert_array_equal(report.sizes, [5, 5])
    assert "n/a" in report.table()
