"""The run-file spelling of codecs: ``[[stages]]`` kinds for updates, and ``broadcast`` in
``[algorithm]`` for the server-to-client model.

.. code-block:: toml

    [algorithm]
    name = "fedavg"
    broadcast = { kind = "uniform", bits = 8 }   # or broadcast = "float16"

    [[stages]]
    kind = "qsgd"
    levels = 4
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fedloom import compression
from fedloom.compression import Compress
from fedloom.experiment import checks
from fedloom.experiment.errors import ExperimentError, KeyPath

CODEC_STAGES: dict[str, Callable[..., Compress]] = {
    "float16": compression.float16,
    "bfloat16": compression.bfloat16,
    "uniform": compression.uniform,
    "qsgd": compression.qsgd,
    "sign": compression.sign,
    "top_k": compression.top_k,
    "random_k": compression.random_k,
}
"""Codec stages by their ``[[stages]]`` kind."""

BROADCAST_OPTION = "broadcast"
"""The ``[algorithm]`` key that names the broadcast codec."""


def broadcast_codec(at: KeyPath, value: object) -> Compress:
    """The codec that ``broadcast = "float16"`` or ``broadcast = { kind = …, … }`` describes."""
    path = (*at, BROADCAST_OPTION)
    table = {"kind": value} if isinstance(value, str) else value
    if not isinstance(table, Mapping) or "kind" not in table:
        raise ExperimentError(
            path, f"must be a codec name or a table with a kind, got {checks.show(value)}"
        )
    kind = checks.choice((*path, "kind"), table["kind"], CODEC_STAGES)
    options = {k: v for k, v in table.items() if k != "kind"}
    checked = checks.options(path, options, CODEC_STAGES[kind], table_keys=("kind",))
    try:
        stage = CODEC_STAGES[kind](**checked)
    except ValueError as error:
        raise checks.blamed(path, checked, error) from None
    if stage.error_feedback:
        raise ExperimentError(
            (*path, "error_feedback"), "applies to client updates only; set it false here"
        )
    return stage
