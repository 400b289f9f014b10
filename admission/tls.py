"""A TLS server context whose certificate follows its files (cert-manager rotates them).

The server's listening socket keeps one :class:`ssl.SSLContext` for its lifetime. Its
``sni_callback`` runs on every handshake (OpenSSL calls it whether or not the client
sent a server name) and hands the handshake the *current* context, which is swapped as
a whole when the files change: a connection either finishes with the old certificate
or starts with the new one, and no request is dropped.

A change is picked up by polling the files' identity (inode, size, mtime: cert-manager
swaps a symlink, editors rewrite in place) every ``interval_s``. A pair that does not
load (the key written but not yet the certificate, a mismatched pair) is ignored until
the next change: the last good pair keeps serving.

With ``client_ca`` the server asks every client for a certificate and verifies one
that is presented against that CA (reloaded with the pair): a certificate that does not
verify fails the handshake. A client may present none (the kubelet's probes of
/healthz do not), so a handshake alone authenticates nobody: the application refuses
/mutate to a connection without a verified certificate
(:mod:`admission.connection` tells it). The verification mode is the listening
context's (OpenSSL fixes it when the connection starts), the trusted CA the current
context's.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cryptography is imported where a certificate is made
    from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger(__name__)

SELF_SIGNED_HOSTS = ("localhost", "127.0.0.1")
SELF_SIGNED_DAYS = 30


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class ReloadingContext:
    """Owns the listening context and the current one; :meth:`check` reloads."""

    def __init__(
        self,
        cert: str | os.PathLike[str],
        key: str | os.PathLike[str],
        *,
        client_ca: str | os.PathLike[str] | None = None,
    ) -> None:
        self.cert = Path(cert)
        self.key = Path(key)
        self.client_ca = Path(client_ca) if client_ca is not None else None
        """PEM CA certificates that a client's certificate must chain to (None: no
        client certificate is asked for)."""
        self._stamps = self._read_stamps()
        self.current = self._load()
        self.reloads = 0
        self.server = self._load()
        self.server.sni_callback = self._pick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _pick(
        self, sock: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        sock.context = self.current

    def _read_stamps(self) -> tuple[tuple[int, int, int], ...]:
        files = (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())
        return tuple(_stamp(f) for f in files)

    def _load(self) -> ssl.SSLContext:
        return _context(self.cert, self.key, self.client_ca)

    def check(self) -> bool:
        """Reload if the files changed and load; True when a new pair was loaded."""
        try:
            stamps = self._read_stamps()
        except OSError as exc:
            log.warning("TLS files unreadable, keeping the current certificate: %s", exc)
            return False
        if stamps == self._stamps:
            return False
        try:
            fresh = self._load()
        except (OSError, ssl.SSLError) as exc:
            log.warning("new TLS pair does not load yet, keeping the current one: %s", exc)
            return False
        self.current = fresh
        self._stamps = stamps
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert)
        return True

    def start(self, interval_s: float = 1.0) -> None:
        """Poll the files in a daemon thread until :meth:`stop`."""

        def run() -> None:
            while not self._stop.wait(interval_s):
                self.check()

        self._thread = threading.Thread(target=run, name="tls-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def self_signed(
    directory: Path,
    *,
    ca_file: Path,
    hosts: Sequence[str] = SELF_SIGNED_HOSTS,
    days: int = SELF_SIGNED_DAYS,
) -> tuple[Path, Path]:
    """A certificate for trying the webhook out (``gpupool webhook --self-signed``): a
    CA made for the occasion, written to ``ca_file`` (what a client trusts), and a
    server certificate it signs for ``hosts`` (names or IP addresses), written with its
    key to ``directory`` (created private). Returns the (certificate, key) paths.

    A CA rather than one self-signed certificate: clients that verify (curl
    ``--cacert``, the API server's ``caBundle``) accept a server certificate only from a
    CA, and the CA file stays the thing to trust. Not for production: the CA's key is
    thrown away, so the certificate cannot be renewed, only made again at the next
    start (the CA file is rewritten then)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(minutes=5)  # clocks that differ a little
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpupool webhook trial CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private_key(key_file, key)
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """``key`` as unencrypted PKCS#8 PEM, in a file only its owner may read (created
    that way, never readable to others for an instant)."""
    from cryptography.hazmat.primitives import serialization

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
