"""Experiments as run files: one readable TOML file describes a whole federated run.

The file and the Python API are two faces of one value::

    experiment = load_experiment("examples/digits-fedprox.toml")   # checked; nothing loaded yet
    built = build(experiment)            # data split, model sized and checked, algorithm assembled
    text = experiment.to_toml()          # Experiment.from_toml(text) == experiment

A run file has a top-level ``name`` (and ``description``), then ``[data]`` (with
``[data.partition]``), ``[model]``, ``[train]``, ``[algorithm]``, optional ``[[stages]]`` in data
order, ``[run]`` (with an optional ``[run.target]``), and an optional ``[devices]`` for
heterogeneous devices on a virtual clock; ``examples/*.toml`` show each. Every mistake is an
:class:`ExperimentError` naming file, line and key::

    digits.toml:14: key 'train.lr': must be a finite number > 0, got -0.1
"""

from __future__ import annotations

from fedloom.experiment.build import Built, build
from fedloom.experiment.data_spec import DATASETS, PARTITIONS, DataSpec, PartitionSpec
from fedloom.experiment.devices_spec import DevicesSpec
from fedloom.experiment.errors import ExperimentError, locate
from fedloom.experiment.experiment import Experiment, load_experiment, validate_file
from fedloom.experiment.specs import (
    MODEL_KINDS,
    STAGES,
    AlgorithmSpec,
    ModelSpec,
    RunSpec,
    StageSpec,
    TargetSpec,
    TrainSpec,
)

__all__ = [
    "DATASETS",
    "MODEL_KINDS",
    "PARTITIONS",
    "STAGES",
    "AlgorithmSpec",
    "Built",
    "DataSpec",
    "DevicesSpec",
    "Experiment",
    "ExperimentError",
    "ModelSpec",
    "PartitionSpec",
    "RunSpec",
    "StageSpec",
    "TargetSpec",
    "TrainSpec",
    "build",
    "load_experiment",
    "locate",
    "validate_file",
]
