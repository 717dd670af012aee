"""Data for federated experiments: datasets, partitioners, and a report of partition skew.

A centralized :class:`Dataset` (shipped, generated or read from a file) is split over clients by a
partitioner into :class:`FederatedData`::

    clients = digits().split(dirichlet(alpha=0.5), clients=100, seed=0)
    print(clients.report().table())

This package imports only NumPy; scikit-learn and mnist1d (the ``data`` extra) are imported by
the loaders that need them.
"""

from __future__ import annotations

from fedloom.data.bundled import breast_cancer, digits, mnist1d
from fedloom.data.dataset import Dataset
from fedloom.data.federated import ClientData, FederatedData
from fedloom.data.files import load_csv, load_npz
from fedloom.data.partition import (
    IID,
    Dirichlet,
    DirichletMixture,
    Natural,
    Partitioner,
    QuantitySkew,
    Shards,
    dirichlet,
    dirichlet_mixture,
    iid,
    natural,
    quantity_skew,
    shards,
)
from fedloom.data.report import PartitionReport
from fedloom.data.synthetic import synthetic

__all__ = [
    "IID",
    "ClientData",
    "Dataset",
    "Dirichlet",
    "DirichletMixture",
    "FederatedData",
    "Natural",
    "PartitionReport",
    "Partitioner",
    "QuantitySkew",
    "Shards",
    "breast_cancer",
    "digits",
    "dirichlet",
    "dirichlet_mixture",
    "iid",
    "load_csv",
    "load_npz",
    "mnist1d",
    "natural",
    "quantity_skew",
    "shards",
    "synthetic",
]
