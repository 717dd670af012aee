"""load_csv and load_npz on real files: label mapping, groups, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedloom.data import load_csv, load_npz, natural

CSV = """\
height,weight,animal,farm
1.0,10,dog,north
2.5,20,cat,south
3.0,30,dog,north

4.0,40,bird,east
5.5,50,cat,south
"""


def write(tmp_path: Path, text: str, name: str = "animals.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_maps_sorted_string_labels_and_carries_groups_to_natural(tmp_path: Path) -> None:
    data = load_csv(write(tmp_path, CSV), target="animal", group="farm")
    assert data.name == "animals"
    np.testing.assert_array_equal(data.x, [[1, 10], [2.5, 20], [3, 30], [4, 40], [5.5, 50]])
    assert data.x.dtype == np.float32
    np.testing.assert_array_equal(data.y, [2, 1, 2, 0, 1])  # bird=0, cat=1, dog=2
    assert data.num_classes == 3
    split = data.split(natural(), clients=3, seed=0, holdout=0.0, test_fraction=0.0)
    farms = [sorted(c.x_train[:, 0].tolist()) for c in split.clients]
    assert farms == [[4.0], [1.0, 3.0], [2.5, 5.5]]  # east, north, south


def test_csv_numeric_labels_sort_numerically_and_features_can_be_chosen(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,label\n1,7,10\n2,8,9\n3,9,2\n")
    data = load_csv(path, target="label", features=["b"])
    np.testing.assert_array_equal(data.x, [[7], [8], [9]])
    np.testing.assert_array_equal(data.y, [2, 1, 0])


def test_csv_regression_target(tmp_path: Path) -> None:
    data = load_csv(write(tmp_path, "a,t\n1,0.5\n2,1.5\n"), target="t", classification=False)
    assert data.num_classes is None
    np.testing.assert_array_equal(data.y, np.array([0.5, 1.5], dtype=np.float32))


def test_csv_missing_column_lists_the_available_ones(tmp_path: Path) -> None:
    path = write(tmp_path, CSV)
    message = r"target='species' is not a column .*\['height', 'weight', 'animal', 'farm'\]"
    with pytest.raises(ValueError, match=message):
        load_csv(path, target="species")
    with pytest.raises(ValueError, match=r"features='age' is not a column"):
        load_csv(path, target="animal", features=["height", "age"])
    with pytest.raises(ValueError, match=r"group='barn' is not a column"):
        load_csv(path, target="animal", group="barn")


def test_csv_non_numeric_feature_names_row_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,label\n1,2,x\n3,heavy,y\n")
    with pytest.raises(ValueError, match=r"row 2, column 'b': 'heavy' is not a number"):
        load_csv(path, target="label")
    with pytest.raises(ValueError, match=r"row 1, column 'label': 'x' is not a number"):
        load_csv(path, target="label", features=["a"], classification=False)


def test_csv_missing_file_and_ragged_rows(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv"):
        load_csv(tmp_path / "nowhere.csv", target="y")
    with pytest.raises(ValueError, match="row 2 has 2 fields but the header has 3"):
        load_csv(write(tmp_path, "a,b,y\n1,2,3\n4,5\n"), target="y")
    with pytest.raises(ValueError, match="no data rows"):
        load_csv(write(tmp_path, "a,b,y\n"), target="y")


def test_npz_round_trip_with_string_labels_and_groups(tmp_path: Path) -> None:
    path = tmp_path / "clinics.npz"
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    np.savez(
        path,
        features=x,
        label=np.array(["b", "a", "b", "c", "a", "a"]),
        site=np.array([7, 7, 3, 3, 9, 9]),
    )
    data = load_npz(path, x="features", y="label", groups="site")
    np.testing.assert_array_equal(data.x, x.astype(np.float32))
    np.testing.assert_array_equal(data.y, [1, 0, 1, 2, 0, 0])
    assert data.num_classes == 3
    split = data.split(natural(), clients=3, seed=0, holdout=0.0, test_fraction=0.0)
    assert [sorted(c.x_train[:, 0].tolist()) for c in split.clients] == [[4, 6], [0, 2], [8, 10]]


def test_npz_regression_keeps_float_targets(tmp_path: Path) -> None:
    path = tmp_path / "r.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.array([0.25, 1.5, -2.0]))
    data = load_npz(path, classification=False)
    assert data.num_classes is None
    np.testing.assert_array_equal(data.y, np.array([0.25, 1.5, -2.0], dtype=np.float32))


def test_npz_refuses_object_arrays_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.zeros((2, 1)), y=np.array([{"label": 1}, None], dtype=object))
    with pytest.raises(ValueError, match=r"'y' .*holds Python objects.*allow_pickle=False"):
        load_npz(path)


def test_npz_missing_array_lists_the_available_ones(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    np.savez(path, x=np.zeros((2, 1)), target=np.zeros(2))
    with pytest.raises(ValueError, match=r"y='y' is not an array .*\['target', 'x'\]"):
        load_npz(path)


def test_npz_rejects_a_plain_npy_file(tmp_path: Path) -> None:
    path = tmp_path / "single.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match=r"not an \.npz archive"):
        load_npz(path)
