"""PyTorch models in fedloom: a ``torch.nn.Module`` as one flat ``float32`` vector.

What travels in the vector, in this order:

- every parameter (``named_parameters()``). Parameters with ``requires_grad=False`` travel too,
  marked non-trainable: their gradient is zero, so local training and server optimizers never
  move them. ``float16``, ``bfloat16`` and ``float64`` parameters travel as ``float32`` and are
  cast back to their own dtype when written into a module.
- every floating-point persistent buffer (``named_buffers()`` that are also in ``state_dict()``),
  marked non-trainable. These are running statistics such as BatchNorm's ``running_mean`` and
  ``running_var``: clients update them through training-mode forward passes (``loss_and_grad``
  writes the new values into the parameter vector), the server's reducer averages them with the
  rest of the update, and server optimizers do not touch them.

What does not travel: integer and boolean buffers, such as BatchNorm's ``num_batches_tracked``,
and non-persistent buffers (constants a module recomputes itself). They stay at whatever the
local module has. BatchNorm with its default ``momentum`` never reads ``num_batches_tracked``;
with ``momentum=None`` (a cumulative average) it does, and that counter would be local to each
process, so use a numeric momentum in federated training.
"""

from __future__ import annotations

from fedloom.torch.architectures import mlp
from fedloom.torch.dpsgd import dp_sgd
from fedloom.torch.model import TorchModel
from fedloom.torch.training import local_sgd
from fedloom.torch.vectors import module_layout, module_to_vector, vector_to_module

__all__ = [
    "TorchModel",
    "dp_sgd",
    "local_sgd",
    "mlp",
    "module_layout",
    "module_to_vector",
    "vector_to_module",
]
