"""``fl.privacy`` is one attribute away and costs nothing until used."""

from __future__ import annotations

import subprocess
import sys

import fedloom as fl
from fedloom import privacy


def test_importing_fedloom_loads_no_accountant() -> None:
    code = "import sys, fedloom; print('dp_accounting' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fl_privacy_is_the_privacy_package() -> None:
    assert fl.privacy is privacy  # type: ignore[attr-defined]
    assert set(privacy.__all__) >= {"CentralGaussian", "PrivacyBudget", "calibrate_noise"}
    for name in privacy.__all__:
        assert getattr(privacy, name) is not None
