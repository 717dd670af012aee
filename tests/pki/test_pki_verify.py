"""The federation CA: certificates it issues verify; expired, revoked, unknown and foreign ones
are refused with the reason; the CLI drives the same functions."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from fedloom.pki import (
    CertificateRefused,
    Federation,
    PkiError,
    Verifier,
    init_ca,
    issue,
    read_allowlist,
    revoke,
)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    fed = init_ca(tmp_path_factory.mktemp("fed") / "ca")
    for site in ("alpha", "beta"):
        issue(fed.root, site)
    issue(fed.root, "server", server=True)
    return fed


def test_issued_site_verifies_with_its_name(fed: Federation) -> None:
    identity = Verifier(fed.root).verify(fed.cert("alpha").read_bytes())
    assert identity.site == "alpha"
    cert = x509.load_pem_x509_certificate(fed.cert("alpha").read_bytes())
    assert identity.serial == cert.serial_number
    assert read_allowlist(fed.allowlist) == ["alpha", "beta"]
    assert os.stat(fed.key("alpha")).st_mode & 0o077 == 0
    assert os.stat(fed.ca_key).st_mode & 0o077 == 0


def test_other_ca_is_refused(fed: Federation, tmp_path: Path) -> None:
    other = init_ca(tmp_path / "other")
    issue(other.root, "alpha")  # same name, wrong signer
    with pytest.raises(CertificateRefused, match="not signed by this federation's CA"):
        Verifier(fed.root).verify(other.cert("alpha").read_bytes())


def test_expired_and_not_yet_valid_are_refused(fed: Federation, tmp_path: Path) -> None:
    verifier = Verifier(fed.root)
    pem = fed.cert("beta").read_bytes()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    with pytest.raises(CertificateRefused, match="'beta' expired at"):
        verifier.verify(pem, now=later)
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with pytest.raises(CertificateRefused, match="not valid before"):
        verifier.verify(pem, now=earlier)


def test_revoked_then_reissued(tmp_path: Path) -> None:
    fed = init_ca(tmp_path / "ca")
    issue(fed.root, "gamma")
    verifier = Verifier(fed.root)
    old = fed.cert("gamma").read_bytes()
    assert verifier.verify(old).site == "gamma"
    serial = revoke(fed.root, "gamma")
    assert serial == x509.load_pem_x509_certificate(old).serial_number
    with pytest.raises(CertificateRefused, match=r"'gamma' .* is revoked"):
        verifier.verify(old)  # the same verifier re-reads the changed list
    issue(fed.root, "gamma")
    assert verifier.verify(fed.cert("gamma").read_bytes()).site == "gamma"
    with pytest.raises(CertificateRefused, match="revoked"):
        verifier.verify(old)


def test_unknown_site_and_server_certificate_are_refused(fed: Federation) -> None:
    verifier = Verifier(fed.root)
    with pytest.raises(CertificateRefused, match="not a site"):
        verifier.verify(fed.cert("server").read_bytes())
    lines = fed.allowlist.read_text()
    try:
        fed.allowlist.write_text("alpha\n")
        with pytest.raises(CertificateRefused, match="'beta' is not on the federation's allow"):
            verifier.verify(fed.cert("beta").read_bytes())
    finally:
        fed.allowlist.write_text(lines)


def test_forged_revocation_list_is_not_trusted(fed: Federation, tmp_path: Path) -> None:
    other = init_ca(tmp_path / "other")
    copy = init_ca(tmp_path / "copy")
    issue(copy.root, "alpha")
    copy.crl.write_bytes(other.crl.read_bytes())
    with pytest.raises(PkiError, match="not signed by the federation CA"):
        Verifier(copy.root).verify(copy.cert("alpha").read_bytes())


def test_bad_names_and_garbage(fed: Federation) -> None:
    with pytest.raises(PkiError, match="site name must be"):
        issue(fed.root, "../evil")
    with pytest.raises(CertificateRefused, match="not a PEM certificate"):
        Verifier(fed.root).verify(b"hello")
    with pytest.raises(PkiError, match="already holds a federation CA"):
        init_ca(fed.root)


def test_cli_init_issue_revoke(tmp_path: Path) -> None:
    env = {**os.environ, "FEDLOOM_CA": str(tmp_path / "fed")}

    def fedloom(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fedloom", "ca", *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    assert fedloom("init", str(tmp_path / "fed")).returncode == 0
    assert fedloom("issue", "site-1").returncode == 0
    assert fedloom("issue", "server", "--server", "--host", "10.0.0.1").returncode == 0
    out = fedloom("revoke", "site-1")
    assert out.returncode == 0, out.stderr
    fed = Federation(tmp_path / "fed")
    with pytest.raises(CertificateRefused, match="revoked"):
        Verifier(fed.root).verify(fed.cert("site-1").read_bytes())
    server = x509.load_pem_x509_certificate(fed.cert("server").read_bytes())
    hosts = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.0.0.1" in {str(ip) for ip in hosts.get_values_for_type(x509.IPAddress)}
    bad = fedloom("revoke", "nobody")
    assert bad.returncode == 2
    assert "no certificate for 'nobody'" in bad.stderr
