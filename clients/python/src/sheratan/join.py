"""Join strings (`sheratan join-string` on the hub's machine; docs/API.md, "Control plane"):
`sht1:<sha256 of the CA certificate's DER, hex>:<token>@<host>:<control port>[,<data port>]`.

The hub's CA is fetched from `GET /v1/tls/ca` without a token and trusted only if its SHA-256 is
the pinned one; only then is the token sent, over https verified against that CA."""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass

import httpx

from . import errors


@dataclass
class Joined:
    control_url: str
    data_url: str
    token: str
    verify: ssl.SSLContext


def _bad(why: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(
        "INVALID_REQUEST",
        f"not a join string ({why})",
        "expected sht1:<ca-sha256>:<token>@<host>:<port>, as `sheratan join-string` prints it on the hub",
    )


def parse(text: str) -> tuple[str, str, str, int, int]:
    """(ca sha256, token, host, control port, data port) of a join string."""
    if not text.startswith("sht1:"):
        raise _bad("it does not start with sht1:")
    sha, sep, rest = text[5:].partition(":")
    if not sep or len(sha) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha):
        raise _bad("no CA hash of 64 hex digits")
    token, sep, where = rest.rpartition("@")
    if not sep or not token:
        raise _bad("no token@host")
    host, sep, ports = where.rpartition(":")
    if not sep or not host:
        raise _bad("no :port after the host")
    control, _, data = ports.partition(",")
    data = data or "8788"
    if not (control.isdigit() and data.isdigit() and 0 < int(control) < 65536 and 0 < int(data) < 65536):
        raise _bad(f"ports {ports!r} are not numbers from 1 to 65535")
    return sha.lower(), token, host, int(control), int(data)


def one_certificate(pem: str) -> bytes | None:
    """The DER of the one certificate `pem` holds; None for anything else (several, none, other
    PEM blocks, bad base64): only the certificate the pin hashes may be trusted."""
    blocks = re.findall(r"-----BEGIN ([A-Z0-9 ]+)-----", pem)
    if blocks != ["CERTIFICATE"]:
        return None
    try:
        return ssl.PEM_cert_to_DER_cert(pem.strip())
    except ValueError:
        return None


def join(text: str, timeout: float = 10.0) -> Joined:
    """Fetches and pins the hub's CA; the URLs, token and TLS settings to use from then on."""
    sha, token, host, control_port, data_port = parse(text)
    control_url, data_url = f"https://{host}:{control_port}", f"https://{host}:{data_port}"
    try:
        # Unverified on purpose: nothing is trusted until its hash matches the pin, and no
        # token goes with this request.
        response = httpx.get(f"{control_url}/v1/tls/ca", verify=False, timeout=timeout)
    except httpx.TransportError as err:
        raise errors.Unavailable("UNAVAILABLE", f"cannot reach the hub at {control_url}: {err}") from err
    if response.status_code != 200:
        raise errors.from_response(response.status_code, None, None)
    der = one_certificate(response.text)
    found = hashlib.sha256(der).hexdigest() if der else "(not exactly one certificate)"
    if der is None or found != sha:
        raise errors.IntegrityFailure(
            "CA_MISMATCH",
            f"the hub at {control_url} presents a CA that does not match the join string: "
            f"expected sha256 {sha}, found {found}; the token was not sent",
            "check the string (`sheratan join-string` on the hub) and what sits between this machine and the hub",
        )
    # The pinned CA and nothing else: not the system's roots, not whatever else the answer held.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ssl.DER_cert_to_PEM_cert(der))
    return Joined(control_url, data_url, token, context)
