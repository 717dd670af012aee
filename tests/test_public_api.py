from __future__ import annotations

import subprocess
import sys

import fedloom as fl

EXPECTED = {
    # data, client work, algorithm, where it runs: the four things a user picks
    "data", "local_sgd", "LocalSGD", "custom", "ClientWork", "Model",
    "SoftmaxRegression", "LinearRegression", "Layout", "Field",
    "Algorithm", "ALGORITHMS", "algorithm",
    "fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedprox", "scaffold", "fednova",
    "simulate", "serve", "fixed", "fraction", "poisson", "replay", "Target", "History",
    "RoundRecord",
    "Broadcast", "ClientResult", "clip_by_norm", "secure_sum",
    "engine", "optimizers", "reducers", "robust", "stages", "compression", "__version__",
}  # fmt: skip


def test_all_is_exactly_the_public_surface() -> None:
    assert set(fl.__all__) == EXPECTED
    assert len(fl.__all__) == len(set(fl.__all__))
    for name in fl.__all__:
        assert getattr(fl, name) is not None


def test_recipe_registry_names_every_recipe() -> None:
    assert set(fl.ALGORITHMS) == {
        "fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedprox", "scaffold", "fednova",
    }  # fmt: skip
    for name, recipe in fl.ALGORITHMS.items():
        assert getattr(fl, name) is recipe


def test_importing_fedloom_needs_only_numpy() -> None:
    code = (
        "import sys, fedloom, fedloom.data; "
        "print(sorted(m for m in ('torch', 'sklearn', 'mnist1d', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fl_torch_is_available_as_an_attribute() -> None:
    assert fl.torch.local_sgd is not None  # type: ignore[attr-defined]
