"""A bound on request bodies, checked before the application reads them.

FastAPI reads a JSON body whole before validating it, so a client could make the server
hold a body of any size in memory. :class:`BodyLimit` (pure ASGI, in front of the app)
answers a declared ``Content-Length`` over the limit with a 413 without reading a byte of
the body, and stops reading a body sent without a length (chunked) as soon as it passes the
limit, answering 413 in place of whatever the application made of the part it got.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: request bodies of at most ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send, int(declared))
            return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            # past the limit the app is told the body ended (it then fails to parse what it
            # got), and its answer is replaced by the 413 below
            nonlocal received, too_large
            if too_large:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def watched_send(message: Message) -> None:
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._reject(send, received)

        await self.app(scope, limited_receive, watched_send)

    async def _reject(self, send: Send, size: int) -> None:
        body = json.dumps({"detail": f"request body: {size:,} bytes or more; the limit is "
                                     f"{self.max_bytes:,}"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
