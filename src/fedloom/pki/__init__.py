"""The federation's certificate authority: issue, revoke and verify site certificates.

Only the ``cryptography`` library is used; nothing here speaks gRPC. :mod:`fedloom.transport`
hands the certificate a TLS handshake authenticated to :class:`Verifier`.
"""

from __future__ import annotations

from fedloom.pki.authority import Federation, init_ca, issue, read_allowlist, revoke
from fedloom.pki.errors import CertificateRefused, PkiError
from fedloom.pki.verify import Identity, Verifier, check_certificate, site_of

__all__ = [
    "CertificateRefused",
    "Federation",
    "Identity",
    "PkiError",
    "Verifier",
    "check_certificate",
    "init_ca",
    "issue",
    "read_allowlist",
    "revoke",
    "site_of",
]
