"""Deciding whether a peer's certificate belongs to the federation, with the reason when not.

TLS already checks the chain during the handshake; this check runs again on the certificate the
handshake authenticated and adds what TLS in gRPC cannot: the federation's allow-list and its
revocation list. It refuses, in this order, a certificate that

1. is not signed by the federation CA ("wrongly signed"),
2. is outside its validity window ("expired" or "not yet valid"),
3. is not a site (client-authentication) certificate,
4. appears on the CA-signed revocation list ("revoked"),
5. names a site missing from the allow-list ("unknown").

The allow-list and the revocation list are re-read whenever their files change, so
``fedloom ca revoke`` takes effect for the next connection without restarting the server.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedloom.pki.authority import Federation, read_allowlist
from fedloom.pki.errors import CertificateRefused, PkiError


@dataclass(frozen=True)
class Identity:
    """A verified site: its name (the certificate's CN), certificate serial number and full
    subject (RFC 4514, e.g. ``CN=hospital-a``)."""

    site: str
    serial: int
    subject: str = ""


class Verifier:
    """Checks site certificates against one federation directory (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.federation = Federation(Path(root))
        path = self.federation.ca_cert
        if not path.exists():
            raise PkiError(f"{path} not found: create the federation with `fedloom ca init DIR`")
        self.ca = x509.load_pem_x509_certificate(path.read_bytes())
        self._allowed: tuple[float, list[str]] | None = None
        self._revoked: tuple[float, frozenset[int]] | None = None

    def allowlist(self) -> list[str]:
        """The allowed sites, in allow-list order (re-read when the file changes)."""
        path = self.federation.allowlist
        stamp = path.stat().st_mtime_ns if path.exists() else -1.0
        if self._allowed is None or self._allowed[0] != stamp:
            self._allowed = (stamp, read_allowlist(path) if path.exists() else [])
        return list(self._allowed[1])

    def revoked(self) -> frozenset[int]:
        """Serial numbers on the revocation list, after checking the CA signed the list."""
        path = self.federation.crl
        if not path.exists():
            return frozenset()
        stamp = float(path.stat().st_mtime_ns)
        if self._revoked is None or self._revoked[0] != stamp:
            crl = x509.load_pem_x509_crl(path.read_bytes())
            if not crl.is_signature_valid(self.ca.public_key()):  # type: ignore[arg-type]
                raise PkiError(f"{path} is not signed by the federation CA; refusing to use it")
            self._revoked = (stamp, frozenset(entry.serial_number for entry in crl))
        return self._revoked[1]

    def verify(self, pem: bytes, *, now: dt.datetime | None = None) -> Identity:
        """The identity in ``pem``, or :class:`CertificateRefused` with the reason."""
        cert = check_certificate(pem, self.ca, now=now)
        site = _common_name(cert)
        if cert.serial_number in self.revoked():
            raise CertificateRefused(
                f"certificate of {site!r} (serial {cert.serial_number:x}) is revoked"
            )
        if site not in self.allowlist():
            raise CertificateRefused(f"site {site!r} is not on the federation's allow-list")
        return Identity(site, cert.serial_number, cert.subject.rfc4514_string())


def site_of(pem: bytes, ca_pem: bytes, *, now: dt.datetime | None = None) -> str:
    """The site named by certificate ``pem`` after checks 1-3 of the module docstring against
    the CA certificate ``ca_pem``: what a site checks of its own certificate before connecting."""
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as error:
        raise PkiError(f"the CA certificate is not PEM: {error}") from None
    return _common_name(check_certificate(pem, ca, now=now))


def check_certificate(
    pem: bytes, ca: x509.Certificate, *, now: dt.datetime | None = None
) -> x509.Certificate:
    """The certificate in ``pem`` if ``ca`` signed it, it is valid ``now`` and it is a site's;
    otherwise :class:`CertificateRefused` with the reason."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise CertificateRefused(f"not a PEM certificate: {error}") from None
    site = _common_name(cert)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateRefused(
            f"certificate of {site!r} is not signed by this federation's CA "
            f"({ca.subject.rfc4514_string()})"
        ) from None
    moment = dt.datetime.now(dt.UTC) if now is None else now
    if moment > cert.not_valid_after_utc:
        raise CertificateRefused(
            f"certificate of {site!r} expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if moment < cert.not_valid_before_utc:
        raise CertificateRefused(
            f"certificate of {site!r} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise CertificateRefused(f"certificate of {site!r} is not a site (client) certificate")
    return cert


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise CertificateRefused(
            f"certificate must name exactly one site as its common name, got "
            f"{cert.subject.rfc4514_string()!r}"
        )
    return names[0].value
