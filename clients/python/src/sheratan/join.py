"""Join strings (`sheratan join-string` on the hub's machine; docs/API.md, "Control plane"):
`sht1:<sha256 of the CA certificate's DER, hex>:<token>@<host>:<control port>[,<data port>]`.

The hub's CA is fetched from `GET /v1/tls/ca` without a token and trusted only if its SHA-256 is
the pinned one; only then is the token sent, over https verified against that CA."""

from __future__ import annotations

import hashlib
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
    try:
        control_port, data_port = int(control), int(data or 8788)
    except ValueError:
        raise _bad(f"ports {ports!r} are not numbers") from None
    return sha.lower(), token, host, control_port, data_port


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
    pem = response.text
    try:
        found = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    except ValueError:
        found = "(not a certificate)"
    if found != sha:
        raise errors.IntegrityFailure(
            "CA_MISMATCH",
            f"the hub at {control_url} presents a CA that does not match the join string: "
            f"expected sha256 {sha}, found {found}; the token was not sent",
            "check the string (`sheratan join-string` on the hub) and what sits between this machine and the hub",
        )
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=pem)
    return Joined(control_url, data_url, token, context)
