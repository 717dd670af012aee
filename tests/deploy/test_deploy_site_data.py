"""A site's ``--data``: an ``.npz`` archive or a ``.csv`` file (a header, numeric features, a
label column named by ``--label-column``), labels as stored, and a clear error for a bad file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fedloom.deploy import SiteError, load_site_data


def _csv(tmp_path: Path, text: str, name: str = "local.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_features_in_file_order_and_labels_as_stored(tmp_path: Path) -> None:
    # Only classes 3 and 7 at this site: they stay 3 and 7 (no re-numbering per site).
    path = _csv(tmp_path, "a,label,b\n0.5,7,1\n-2,3,2.25\n\n4,7,0\n")
    data = load_site_data(path)
    np.testing.assert_array_equal(
        data.x_train, np.array([[0.5, 1], [-2, 2.25], [4, 0]], dtype=np.float32)
    )
    assert data.x_train.dtype == np.float32
    assert data.y_train.tolist() == [7, 3, 7]
    assert data.y_train.dtype == np.int64
    assert len(data.x_test) == len(data.y_test) == 0


def test_csv_label_column_and_regression_values(tmp_path: Path) -> None:
    path = _csv(tmp_path, "price,x1,x2\n1.5,1,2\n-0.25,3,4\n")
    data = load_site_data(path, label="price", label_kind="value")
    assert data.y_train.tolist() == [1.5, -0.25]
    assert data.y_train.dtype == np.float32
    np.testing.assert_array_equal(data.x_train, [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("a,b\n1,2\n", {}, "--label-column 'label' is not a column of"),
        ("", {}, "is empty; expected a header row of column names"),
        ("a,label\n", {}, "has a header but no data rows"),
        ("a,label\n1,2\n3\n", {}, "row 2 has 1 fields but the header has 2"),
        ("a,label\n1,0\nx,1\n", {}, "row 2, column 'a': 'x' is not a number"),
        ("a,label\n1,0\n2,1.5\n", {}, "row 2: label 1.5 in column 'label' is not a class number"),
        ("a,label\n1,-1\n", {}, "row 1: label -1.0 in column 'label' is not a class number"),
        ("a,label\n1,cat\n", {}, "row 1, column 'label': 'cat' is not a number"),
        ("label\n1\n", {}, "no feature columns left"),
        ("a,label\n1,0\n", {"label_kind": "text"}, "the label kind must be one of"),
    ],
)
def test_bad_csv_is_refused_with_its_reason(
    tmp_path: Path, text: str, options: dict[str, str], message: str
) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(SiteError, match=re.escape(message)) as error:
        load_site_data(path, **options)
    assert str(path) in str(error.value) or "label kind" in message


def test_other_suffixes_are_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,label\n1,0\n", name="local.parquet")
    with pytest.raises(SiteError, match=r"must be an \.npz archive or a \.csv file"):
        load_site_data(path)


def test_npz_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "local.npz"
    np.savez(path, x=np.ones((2, 3), dtype=np.float32), y=np.array([4, 5]))
    data = load_site_data(path)
    assert data.y_train.tolist() == [4, 5]


def test_fedloom_client_refuses_a_bad_csv_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedloom.cli import main

    path = _csv(tmp_path, "a,label\n1,0\n2,x\n")
    with pytest.raises(SystemExit) as exit_:
        main(["client", "--server", "127.0.0.1:1", "--insecure", "--site", "a",
              "--data", str(path), "--model", "site_models:digits_softmax"])  # fmt: skip
    assert exit_.value.code == 2
    assert "row 2, column 'label': 'x' is not a number" in capsys.readouterr().err
