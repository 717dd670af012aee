from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

import fedloom.torch
from fedloom.torch import mlp


def test_public_names() -> None:
    assert sorted(fedloom.torch.__all__) == sorted(
        [
            "TorchModel",
            "dp_sgd",
            "local_sgd",
            "module_layout",
            "module_to_vector",
            "vector_to_module",
            "mlp",
        ]
    )
    for name in fedloom.torch.__all__:
        assert hasattr(fedloom.torch, name)


def test_mlp_builds_linear_relu_stacks() -> None:
    module = mlp(4, [8, 6], 3)()
    kinds = [(type(m).__name__, getattr(m, "in_features", None)) for m in module]
    assert kinds == [("Linear", 4), ("ReLU", None), ("Linear", 8), ("ReLU", None), ("Linear", 6)]
    assert module[-1].out_features == 3
    assert module(torch.zeros(5, 4)).shape == (5, 3)
    single = mlp(4, [], 3)()
    assert len(single) == 1
    assert isinstance(single[0], nn.Linear)


def test_mlp_is_a_value_that_pickles() -> None:
    recipe = mlp(4, [8], 3)
    assert recipe == mlp(4, (8,), 3)
    assert repr(recipe) == "MLP(in_features=4, hidden=(8,), out_features=3)"
    assert pickle.loads(pickle.dumps(recipe)) == recipe


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, [8], 3), "in_features must hold positive integers, got 0"),
        ((True, [8], 3), "in_features must hold positive integers, got True"),
        ((4, "8", 3), "hidden must be a sequence"),
        ((4, [8, -1], 3), "hidden must hold positive integers, got -1"),
        ((4, [8], 2.5), "out_features must hold positive integers, got 2.5"),
    ],
)
def test_mlp_validates_its_arguments(args: tuple[object, object, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mlp(*args)  # type: ignore[arg-type]
