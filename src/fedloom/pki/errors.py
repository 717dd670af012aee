"""Errors of the federation's certificate authority."""

from __future__ import annotations


class PkiError(Exception):
    """A certificate-authority operation that cannot be done, and why."""


class CertificateRefused(PkiError):
    """A peer's certificate that the federation does not accept; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
