"""``python unclipping_site.py <fedloom client arguments>``: a real ``fedloom client`` process
that claims to run a private run's client half (its Hello lists the feature) but builds its
program without the privacy stage, so it sends its updates unclipped."""

from __future__ import annotations

import sys
from dataclasses import replace

from fedloom.algorithms import Algorithm
from fedloom.cli import main
from fedloom.core.model import Model
from fedloom.deploy import site
from fedloom.transport import TrainingConfig

original = site.site_algorithm


def site_algorithm(config: TrainingConfig, model: Model) -> Algorithm:
    return original(replace(config, privacy=None), model)


site.site_algorithm = site_algorithm
main(sys.argv[1:])
