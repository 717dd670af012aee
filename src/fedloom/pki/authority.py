"""A federation's certificate authority on disk: create it, issue site certificates, revoke them.

One directory holds the federation::

    ca.pem           the CA certificate every party trusts
    ca.key           the CA's private key (mode 0600; only ``issue`` and ``revoke`` read it)
    allowlist.txt    the sites allowed to join, one name a line, in the order they were issued
    revoked.crl      the certificate revocation list (PEM), signed by the CA
    sites/NAME.pem   a party's certificate; sites/NAME.key its private key (mode 0600)

A site's identity is the common name (CN) of its certificate, which is also its DNS
subject-alternative name. Site certificates are for client authentication only; a certificate
issued with ``server=True`` is for server authentication, names the hosts it serves, and never
goes on the allow-list. Keys are ECDSA P-256, signatures SHA-256, all from ``cryptography``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedloom.pki.errors import PkiError

SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
"""Site names: letters, digits, ``.``, ``_`` and ``-``, 1–63 characters, not starting with a
punctuation mark (they become file names and DNS names)."""


_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class Federation:
    """The files of a federation directory (see the module docstring)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def allowlist(self) -> Path:
        return self.root / "allowlist.txt"

    @property
    def crl(self) -> Path:
        return self.root / "revoked.crl"

    def cert(self, name: str) -> Path:
        return self.root / "sites" / f"{check_site_name(name)}.pem"

    def key(self, name: str) -> Path:
        return self.root / "sites" / f"{check_site_name(name)}.key"


def check_site_name(name: str) -> str:
    """``name`` if it is a valid site name, else a :class:`PkiError` saying what is accepted."""
    if not isinstance(name, str) or not SITE_NAME.match(name):
        raise PkiError(
            f"site name must be 1-63 letters, digits, '.', '_' or '-' (not starting with "
            f"punctuation), got {name!r}"
        )
    return name


def init_ca(root: str | Path, *, name: str = "fedloom federation", days: int = 3650) -> Federation:
    """Create a new federation in the empty (or missing) directory ``root``."""
    fed = Federation(Path(root))
    if fed.ca_cert.exists() or fed.ca_key.exists():
        raise PkiError(f"{fed.root} already holds a federation CA ({fed.ca_cert}); not replaced")
    if days < 1:
        raise PkiError(f"days must be >= 1, got {days}")
    (fed.root / "sites").mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(fed.ca_key, _key_pem(key))
    fed.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fed.allowlist.write_text("")
    _write_crl(fed, key, cert, [])
    return fed


def issue(
    root: str | Path,
    name: str,
    *,
    days: int = 365,
    server: bool = False,
    hosts: tuple[str, ...] = (),
    not_before: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """Issue a certificate and key for ``name``; return their paths.

    A site (``server=False``) is appended to the allow-list. A server certificate names
    ``hosts`` (DNS names or IP addresses; ``localhost`` and ``127.0.0.1`` when none are given).
    ``not_before`` shifts the validity window (tests use it to make expired certificates).
    """
    fed = Federation(Path(root))
    check_site_name(name)
    if days < 1:
        raise PkiError(f"days must be >= 1, got {days}")
    ca_key, ca_cert = load_ca(fed)
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now() - dt.timedelta(minutes=5) if not_before is None else not_before
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    names: list[x509.GeneralName] = [x509.DNSName(name)]
    if server:
        for host in hosts or ("localhost", "127.0.0.1"):
            names.append(_general_name(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(fed.key(name), _key_pem(key))
    fed.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if not server and name not in read_allowlist(fed.allowlist):
        with fed.allowlist.open("a") as out:
            out.write(f"{name}\n")
    return fed.cert(name), fed.key(name)


def revoke(root: str | Path, name: str) -> int:
    """Add ``name``'s current certificate to the revocation list; return its serial number.

    The site stays on the allow-list: a certificate issued to it later is accepted again.
    """
    fed = Federation(Path(root))
    path = fed.cert(name)
    if not path.exists():
        raise PkiError(f"no certificate for {name!r} in {fed.root / 'sites'}; nothing to revoke")
    ca_key, ca_cert = load_ca(fed)
    serial = x509.load_pem_x509_certificate(path.read_bytes()).serial_number
    crl = x509.load_pem_x509_crl(fed.crl.read_bytes())
    serials = [entry.serial_number for entry in crl]
    if serial not in serials:
        serials.append(serial)
    _write_crl(fed, ca_key, ca_cert, serials)
    return serial


def read_allowlist(path: Path) -> list[str]:
    """Site names in the allow-list file, in order; blank lines and ``#`` comments skipped."""
    names = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            names.append(check_site_name(text))
        except PkiError as error:
            raise PkiError(f"{path}:{number}: {error}") from None
    if len(set(names)) != len(names):
        raise PkiError(f"{path}: a site is listed twice; each site once")
    return names


def load_ca(fed: Federation) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The CA's key and certificate, with an error naming the file that is missing or wrong."""
    for path in (fed.ca_cert, fed.ca_key):
        if not path.exists():
            raise PkiError(f"{path} not found: create the federation with `fedloom ca init DIR`")
    key = serialization.load_pem_private_key(fed.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{fed.ca_key} is not an ECDSA key made by `fedloom ca init`")
    return key, x509.load_pem_x509_certificate(fed.ca_cert.read_bytes())


def _write_crl(
    fed: Federation, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, serials: list[int]
) -> None:
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=3650))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    crl = builder.sign(key, hashes.SHA256())
    temporary = fed.crl.with_suffix(".crl.tmp")
    temporary.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    temporary.replace(fed.crl)  # readers see the old list or the new one, never half of one


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
