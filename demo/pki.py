"""Certificates for one demo run: the webhook's serving certificate and the API server's
client certificate, each from a CA made for the occasion, as a cluster has them.

In a cluster the webhook serves a certificate the API server trusts (the
MutatingWebhookConfiguration's ``caBundle``), and the API server presents a client
certificate from its own CA, which the webhook verifies (``gpupool webhook
--client-ca``). The demo makes both pairs so that its API stand-in calls the real
webhook exactly that way. Keys are EC P-256, valid for a day; nothing here is for
production (cert-manager or the chart's certgen Job make the real ones).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID = dt.timedelta(days=1)


class Authority:
    """A CA whose certificate is written to ``directory/<name>.pem`` (what a client or
    server that trusts it is given) and which issues server and client certificates."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALID)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.file = directory / f"{name}.pem"
        self.file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def client(self, common_name: str) -> tuple[Path, Path]:
        """A client certificate for ``common_name``: (certificate, key) files."""
        return self._issue(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, ())

    def server(self, common_name: str, hosts: Sequence[str]) -> tuple[Path, Path]:
        """A serving certificate for ``hosts`` (names or IP addresses)."""
        return self._issue(common_name, ExtendedKeyUsageOID.SERVER_AUTH, hosts)

    def _issue(
        self, common_name: str, usage: x509.ObjectIdentifier, hosts: Sequence[str]
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALID)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file = self.directory / f"{common_name}.crt"
        key_file = self.directory / f"{common_name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        return cert_file, key_file
