"""Datasets that ship with an install: nothing is ever downloaded.

scikit-learn and mnist1d are an optional extra (``pip install 'fedloom[data]'``), so they are
imported inside the loaders, never when :mod:`fedloom.data` is imported.
"""

from __future__ import annotations

import importlib
import random
from types import ModuleType

import numpy as np

from fedloom.data._checks import check_int
from fedloom.data.dataset import Dataset

_MNIST1D_CLASSES = 10


def _optional(module: str, loader: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"fedloom.data.{loader}() needs the optional dependency {module.split('.')[0]!r}: "
            "pip install 'fedloom[data]'"
        ) from error


def digits() -> Dataset:
    """The UCI handwritten digits shipped with scikit-learn: 1797 8x8 images, 10 classes.

    From Alpaydin and Kaynak (1998), "Optical Recognition of Handwritten Digits" (UCI). Pixel
    counts 0..16 are divided by 16, so ``x`` lies in [0, 1]; shape ``[1797, 64]``.
    """
    data = _optional("sklearn.datasets", "digits").load_digits()
    x = (np.asarray(data.data, dtype=np.float64) / 16.0).astype(np.float32)
    return Dataset("digits", x, np.asarray(data.target, dtype=np.int64), 10)


def breast_cancer() -> Dataset:
    """Wisconsin diagnostic breast cancer, shipped with scikit-learn: 569 x 30, 2 classes.

    From Street, Wolberg and Mangasarian (1993), "Nuclear feature extraction for breast tumor
    diagnosis". Features are z-scored with the whole dataset's own mean and standard deviation.
    That is a convenience for quick experiments: it leaks global statistics that no single
    client would know in a real federation, and into the held-out test sets.
    """
    data = _optional("sklearn.datasets", "breast_cancer").load_breast_cancer()
    raw = np.asarray(data.data, dtype=np.float64)
    scale = raw.std(axis=0)
    x = ((raw - raw.mean(axis=0)) / np.where(scale > 0, scale, 1.0)).astype(np.float32)
    return Dataset("breast_cancer", x, np.asarray(data.target, dtype=np.int64), 2)


def mnist1d(*, num_samples: int = 5000, seed: int = 0) -> Dataset:
    """MNIST-1D generated from its ten built-in templates: 40-dim signals, 10 classes.

    From Greydanus and Kobak (2024), "Scaling Down Deep Learning with MNIST-1D" (ICML). Uses the
    package's own generator (``mnist1d.data.make_dataset``) with its default arguments, except
    ``num_samples`` and ``seed``; its train and test parts are joined into one dataset, to be
    split by :meth:`Dataset.split`. The generator seeds NumPy's and Python's global random
    state; both are restored afterwards. ``num_samples`` must be a multiple of 10 (equal classes).
    """
    count = check_int("num_samples", num_samples, minimum=_MNIST1D_CLASSES)
    if count % _MNIST1D_CLASSES:
        raise ValueError(
            f"num_samples must be a multiple of {_MNIST1D_CLASSES} (one equal share per class), "
            f"got {num_samples!r}"
        )
    seed = check_int("seed", seed, minimum=0)
    if seed >= 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    generator = _optional("mnist1d.data", "mnist1d")
    args = generator.get_dataset_args()
    args.num_samples = count
    args.seed = seed
    # The generator draws from the legacy global streams; keep the caller's streams untouched.
    numpy_state, python_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        made = generator.make_dataset(args)
    finally:
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)
    x = np.concatenate([made["x"], made["x_test"]]).astype(np.float32)
    y = np.concatenate([made["y"], made["y_test"]]).astype(np.int64)
    return Dataset("mnist1d", x, y, _MNIST1D_CLASSES)
