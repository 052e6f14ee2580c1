"""Whom sync trusts over HTTPS: the other end's certificate is checked against a CA bundle (a post's
sync.ca_file for headquarters, headquarters' sync.pull_ca_file for posts; the system's CAs when
unset) and, when a fingerprint is pinned, against that SHA-256 fingerprint after the handshake. A
failure is a TrustError that names the URL, what failed and the setting to fix."""

from __future__ import annotations

import hashlib
import http.client
import ssl
from dataclasses import dataclass

# OpenSSL's verify codes (X509_V_ERR_*) that mean "no CA we trust signed this certificate"
_UNKNOWN_CA = {2, 18, 19, 20, 21}
_EXPIRED, _NOT_YET_VALID = 10, 9
_HOSTNAME_MISMATCH = {62, 64}  # a host name, an IP address


class TrustError(OSError):
    """The other end's certificate is not trusted; the message says why and what to set."""


def normal_pin(text: str) -> str:
    """A SHA-256 fingerprint as lower-case hex without colons ('AB:CD:...' as openssl prints it)."""
    return text.replace(":", "").strip().lower()


@dataclass(frozen=True)
class Trust:
    """Where the CA bundle and the pins come from, and the settings' names for the messages."""

    ca_file: str = ""
    pins: tuple[str, ...] = ()
    ca_setting: str = "sync.ca_file"
    pin_setting: str = "sync.pin_sha256"

    def context(self, url: str) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_file:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise TrustError(
                    f"cannot use {self.ca_setting} = {self.ca_file!r} to check {url}: {exc}; "
                    "give a readable PEM file with the CA certificate (or the self-signed certificate)"
                ) from None
        return context

    def explain(self, url: str, exc: ssl.SSLCertVerificationError) -> str:
        why = exc.verify_message or str(exc)
        if exc.verify_code in _UNKNOWN_CA:
            where = (
                f"{self.ca_setting} = {self.ca_file!r}"
                if self.ca_file
                else f"{self.ca_setting} is not set, so only the system's CAs are trusted"
            )
            return (
                f"the certificate of {url} is signed by an unknown CA ({why}); {where}: set {self.ca_setting} "
                "to the PEM file of the CA that signed it (or of the self-signed certificate)"
            )
        if exc.verify_code in _HOSTNAME_MISMATCH:
            return (
                f"the certificate of {url} does not name that host (hostname mismatch: {why}); use the host name "
                "the certificate was made for in the URL, or make a certificate for this name"
            )
        if exc.verify_code in (_EXPIRED, _NOT_YET_VALID):
            return f"the certificate of {url} is not valid now ({why}); renew it, or check this machine's clock"
        return f"the certificate of {url} failed verification ({why}); check {self.ca_setting}"

    def connection_class(self, url: str) -> type[http.client.HTTPSConnection]:
        """An HTTPSConnection that checks the certificate as this Trust says; `url` is for messages."""
        trust = self
        context = self.context(url)
        pins = tuple(normal_pin(p) for p in self.pins if p)

        class Verified(http.client.HTTPSConnection):
            def __init__(self, *args, **kwargs) -> None:
                kwargs["context"] = context
                super().__init__(*args, **kwargs)

            def connect(self) -> None:
                try:
                    super().connect()
                except ssl.SSLCertVerificationError as exc:
                    raise TrustError(trust.explain(url, exc)) from None
                if not pins:
                    return
                der = self.sock.getpeercert(binary_form=True) or b""
                seen = hashlib.sha256(der).hexdigest()
                if seen not in pins:
                    self.close()
                    wanted = " or ".join(pins)
                    raise TrustError(
                        f"the certificate of {url} has the SHA-256 fingerprint {seen}, not {trust.pin_setting} = "
                        f"{wanted} (fingerprint mismatch); if the certificate was replaced on purpose, set "
                        f"{trust.pin_setting} to the new fingerprint (openssl x509 -noout -fingerprint -sha256)"
                    )

        return Verified

    def connection_for(self, scheme: str, url: str) -> type[http.client.HTTPConnection]:
        return self.connection_class(url) if scheme == "https" else http.client.HTTPConnection
