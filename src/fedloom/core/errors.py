"""Errors shared across layers."""

from __future__ import annotations


class MissingExtra(ImportError):
    """An optional feature whose package is not installed; the message gives the install line."""

    def __init__(self, feature: str, extra: str):
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'fedloom[{extra}]'")
