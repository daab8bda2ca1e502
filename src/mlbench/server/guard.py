"""The master's front door: who may send a body, and how big it may be — decided before a byte
of it is read.

Why an ASGI middleware and not route dependencies: FastAPI reads and parses a declared request
body *before* it solves a route's dependencies, so an auth dependency runs after the body is in
memory. An adversarial probe sent an unauthenticated 1 GB POST to the events endpoint (the master
went from 80 MB to 2 GB resident) and 100 MB to ``/api/runs`` (the event loop blocked 6.7 s).
Here, for every request that may carry a body (POST/PUT/PATCH/DELETE):

1. its size limit is chosen by path (:class:`BodyLimits`); a ``Content-Length`` above it is a 413
   at once, the body unread (uvicorn drops the connection's unread bytes);
2. under ``/api/`` it must carry a valid bearer token (401 otherwise), looked up in a worker
   thread so the event loop never waits on the database — still before any body is read;
3. a body without ``Content-Length`` (chunked) is counted as it streams in, and the request is
   answered 413 the moment it passes the limit.

Scope checks (admin vs. a run's upload token) stay in the routes' dependencies, which see the
same token; this layer only refuses what no route would accept.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MIB = 1024 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class BodyLimits:
    """Largest request body per endpoint group, in bytes (``mlbench serve --max-*-mb``).

    Defaults, with the reasoning: an event batch is at most 10,000 records of at most ~400 bytes
    each as the uploader writes them (~250 typical), so 8 MiB holds the largest legitimate
    batch twice over; a run's ``result.json`` (``/api/runs/import``) grows with ranks and
    metrics, ~20 kB for 2 ranks, so 16 MiB covers thousands of ranks; every other body (run
    submission, cancel) is a few kB of JSON, 1 MiB."""

    events: int = 8 * MIB
    imports: int = 16 * MIB
    other: int = 1 * MIB

    def for_path(self, path: str) -> int:
        if path.startswith("/api/runs/") and path.endswith("/events"):
            return self.events
        if path == "/api/runs/import":
            return self.imports
        return self.other


TokenLookup = Callable[[str], bool]


class Guard:
    """ASGI middleware: size limits and authentication before any request body is read.

    ``token_valid(token) -> bool`` is called in a worker thread (it queries the database)."""

    def __init__(self, app: ASGIApp, limits: BodyLimits, token_valid: TokenLookup) -> None:
        self.app, self.limits, self.token_valid = app, limits, token_valid

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = self.limits.for_path(path)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _reply(send, 413, _too_large(path, limit), close=True)
            return
        if path.startswith("/api/"):
            refusal = await self._authenticate(headers.get(b"authorization"))
            if refusal is not None:
                await _reply(send, 401, refusal, bearer=True, close=length not in (None, b"0"))
                return
        if length is not None:  # declared and within the limit: the server enforces it
            await self.app(scope, receive, send)
            return
        await _Counted(self.app, limit, path)(scope, receive, send)

    async def _authenticate(self, header: bytes | None) -> str | None:
        """None when the request carries a valid bearer token, else why not."""
        if header is None:
            return "a bearer token is required"
        scheme, _, credentials = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return "a bearer token is required"
        if not await run_in_threadpool(self.token_valid, credentials.strip()):
            return "invalid token"
        return None


class _Counted:
    """One chunked request: pass body chunks through while they fit; past the limit, answer 413
    and tell the app the client went away (so it stops reading and its response is dropped)."""

    def __init__(self, app: ASGIApp, limit: int, path: str) -> None:
        self.app, self.limit, self.path = app, limit, path
        self.seen = 0
        self.refused = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted_receive() -> Message:
            if self.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.seen += len(message.get("body", b""))
                if self.seen > self.limit:
                    self.refused = True
                    await _reply(send, 413, _too_large(self.path, self.limit), close=True)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not self.refused:  # the 413 is already the answer
                await send(message)

        await self.app(scope, counted_receive, guarded_send)


def _too_large(path: str, limit: int) -> str:
    return f"request body larger than this endpoint's limit of {limit} bytes ({path})"


async def _reply(
    send: Send, status: int, detail: str, *, bearer: bool = False, close: bool = False
) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if bearer:
        headers.append((b"www-authenticate", b"Bearer"))
    if close:  # the unread body must not be taken for the next request on this connection
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


#: Every response's security headers. The dashboard and the API serve only their own files and
#: JSON: scripts, styles and connections come from this origin alone (no CDN, no inline or
#: evaluated script), and no other site may frame a page that holds a token. Inline *styles*
#: are allowed: the vendored Plotly injects its stylesheet and styles its SVG through style
#: attributes, and a style can neither run code nor send a token anywhere under these rules.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """ASGI middleware adding :data:`CSP` and friends to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
