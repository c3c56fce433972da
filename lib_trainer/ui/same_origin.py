"""Only the page itself may drive the standalone server (`python -m lib_trainer ui`).

Gradio's app answers `access-control-allow-origin: *` and has no login by default, so any web
page the user opens could POST to http://127.0.0.1:7870 and, through "Save config", write a
file of its choosing. `SameOriginOnly` is an ASGI middleware that refuses, with 403:

- a request whose `Host` is not a name this server is reached by: a page on evil.example
  whose DNS name is re-pointed at 127.0.0.1 (DNS rebinding) is then same-origin with the
  server in the browser's eyes, but still sends `Host: evil.example`;
- a request or websocket whose `Origin` is another site (browsers send `Origin` on every
  cross-origin fetch, on every POST, and on every websocket handshake);
- a state-changing request (not GET/HEAD/OPTIONS) without `Origin` whose `Referer` is
  another site (what an old browser's form post would say).

A request that says neither (the address typed in the browser, curl, a script, and gradio
3.41's own queue, which POSTs each event to the server's /api/predict) is served: the danger
is a page in the user's browser, and a browser says where a cross-site request comes from.
A program that sends no such header is not driven by another site (and could forge any header).

Only the standalone server uses it; the WebUI serves its tab from its own server.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Iterable
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def served_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[tuple[str, int]]:
    """The (name, port) pairs a browser may put in `Host` for a server listening on `host`:
    loopback names for a loopback address; for all interfaces (0.0.0.0) also this machine's
    name and the addresses it resolves to; `extra` names (--allow-host) in any case."""
    names = {host.lower().strip("[]")}
    if is_loopback(host) or host in WILDCARDS:
        names.update(LOOPBACK_NAMES)
    if host in WILDCARDS:
        names.update(_this_machine())
    names.update(name.lower().strip("[]") for name in extra)
    names.discard("")
    return frozenset((name, port) for name in names)


def _this_machine() -> set[str]:
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    for name in list(names):
        try:
            names.update(info[4][0] for info in socket.getaddrinfo(name, None))
        except OSError:
            pass
    return names


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    """('name', port) of 'name:port', '[::1]:port' or 'name' (the scheme's default port)."""
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port or (443 if scheme in ("https", "wss") else 80)


def _site(url: str) -> tuple[str, int] | None:
    """('name', port) of an Origin or Referer; None for 'null' or another scheme."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https"):
        return None
    return _host_port(parts.netloc, parts.scheme)


class SameOriginOnly:
    """ASGI middleware: see the module docstring. `allowed`: served_hosts(...)."""

    def __init__(self, app, allowed: frozenset[tuple[str, int]]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            refusal = self.refusal(scope)
            if refusal:
                await _refuse(scope, receive, send, refusal)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope) -> str:
        """Why a request is refused; '' when it may go on."""
        headers = {}
        for key, value in scope.get("headers", []):
            headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        scheme = scope.get("scheme", "http")
        host = headers.get("host", "")
        if _host_port(host, scheme) not in self.allowed:
            names = ", ".join(sorted(f"{_netloc(name, port)}" for name, port in self.allowed))
            return (f"this server does not answer to the name {host!r} (it answers to {names}; "
                    "start it with --allow-host NAME to reach it by another name)")
        origin = headers.get("origin")
        if origin is not None:
            if _site(origin) not in self.allowed:
                return f"requests from another site ({origin}) are refused"
            return ""
        referer = headers.get("referer")
        if referer and scope.get("method", "GET") not in SAFE_METHODS and _site(referer) not in self.allowed:
            return f"requests from another page ({referer}) are refused"
        return ""


def _netloc(name: str, port: int) -> str:
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


async def _refuse(scope, receive, send, reason: str) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect; closing before accepting answers the handshake with 403
        await send({"type": "websocket.close", "code": 1008})
        return
    body = f"403 Forbidden: {reason}\n".encode("utf-8")
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
