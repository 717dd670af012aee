from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from fedloom.torch import module_layout, module_to_vector, vector_to_module


def with_batchnorm() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


class TiedWithConstant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(3, 3)
        self.decoder = nn.Linear(3, 3)
        self.decoder.weight = self.encoder.weight
        self.register_buffer("table", torch.arange(3.0), persistent=False)
        self.register_buffer("scale", torch.ones(3))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


def fresh(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return with_batchnorm()


def test_layout_follows_state_dict_without_integer_buffers() -> None:
    module = with_batchnorm()
    layout = module_layout(module)
    state = {k: v for k, v in module.state_dict().items() if k != "1.num_batches_tracked"}
    assert {f.name: f.shape for f in layout.fields} == {k: tuple(v.shape) for k, v in state.items()}
    parameters_then_buffers = [n for n, _ in module.named_parameters()] + [
        n for n, _ in module.named_buffers() if n in state
    ]
    assert list(layout.names) == parameters_then_buffers
    assert "1.num_batches_tracked" not in layout.names
    parameters = {name for name, _ in module.named_parameters()}
    assert {f.name for f in layout.fields if f.trainable} == parameters
    assert {f.name for f in layout.fields if not f.trainable} == {
        "1.running_mean",
        "1.running_var",
    }
    assert layout.size == sum(v.numel() for v in state.values())


def test_round_trip_through_a_fresh_module() -> None:
    source = fresh(0)
    source.train()
    source(torch.randn(8, 4))  # moves the running statistics away from their initial values
    vector = module_to_vector(source)
    assert vector.dtype == np.float32
    target = fresh(1)
    assert not np.array_equal(module_to_vector(target), vector)
    vector_to_module(vector, target)
    np.testing.assert_array_equal(module_to_vector(target), vector)
    for name, value in source.state_dict().items():
        if name != "1.num_batches_tracked":
            assert torch.equal(target.state_dict()[name], value), name


def test_vector_of_the_wrong_length_names_both_sizes() -> None:
    module = with_batchnorm()
    size = module_layout(module).size
    with pytest.raises(ValueError, match=rf"\({size - 1},\).*\({size},\)"):
        vector_to_module(np.zeros(size - 1, dtype=np.float32), module)


def test_frozen_parameter_is_not_trainable() -> None:
    module = with_batchnorm()
    module[0].bias.requires_grad_(False)
    fields = {f.name: f for f in module_layout(module).fields}
    assert not fields["0.bias"].trainable
    assert fields["0.weight"].trainable


def test_tied_weights_once_and_only_persistent_floating_buffers() -> None:
    layout = module_layout(TiedWithConstant())
    assert layout.names == ("encoder.weight", "encoder.bias", "decoder.bias", "scale")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_travel_as_float32_and_are_cast_back(dtype: torch.dtype) -> None:
    module = with_batchnorm().to(dtype)
    layout = module_layout(module)
    assert {f.dtype for f in layout.fields} == {str(dtype).removeprefix("torch.")}
    vector = np.random.default_rng(0).standard_normal(layout.size).astype(np.float32)
    vector_to_module(vector, module)
    assert all(t.dtype == dtype for t in module.state_dict().values() if t.is_floating_point())
    expected = torch.from_numpy(vector).to(dtype).float().numpy()
    back = module_to_vector(module)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, expected)
    if dtype == torch.float64:
        np.testing.assert_array_equal(back, vector)


def test_unsupported_tensors_are_refused() -> None:
    with pytest.raises(ValueError, match="complex64"):
        module_layout(nn.Linear(2, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="not initialized"):
        module_layout(nn.LazyLinear(2))
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        module_layout("not a module")  # type: ignore[arg-type]


_FLOAT32_MODULE = with_batchnorm()
_FLOAT64_MODULE = with_batchnorm().double()
_SIZE = module_layout(_FLOAT32_MODULE).size


@settings(max_examples=50, deadline=None)
@given(
    vector=arrays(np.float32, _SIZE, elements=st.floats(width=32, allow_nan=False)),
    double=st.booleans(),
)
def test_any_vector_round_trips_exactly(vector: np.ndarray, double: bool) -> None:
    module = _FLOAT64_MODULE if double else _FLOAT32_MODULE
    vector_to_module(vector, module)
    back = module_to_vector(module)
    np.testing.assert_array_equal(back.view(np.uint32), vector.view(np.uint32))
