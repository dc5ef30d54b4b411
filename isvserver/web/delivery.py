"""Whether an answer reached the wire: sent, not sent, or not sent because the client had gone.

A WSGI server asks the response for its next piece only once it has written the one before, so the
body's iterator knows when the whole answer was written; its close() then tells the hooks a call
registered. Before the first byte, a client that has closed its connection (the marketplace gave
up) is noticed and nothing is written.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

from isvserver import deadline

SENT, NOT_SENT, CLIENT_GONE = "sent", "not_sent", "client_gone"
HOOKS = "isvserver.on_answer"
Hook = Callable[[str], None]

log = logging.getLogger("isvserver.calls")


def on_answer(environ: MutableMapping[str, Any], hook: Hook) -> None:
    """Have `hook(delivery)` called once the request's answer was written, or could not be."""
    environ.setdefault(HOOKS, []).append(hook)


def peer_gone(sock: Any) -> bool:
    """Whether the client has closed (or reset) its connection, without waiting or consuming a byte."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError, ValueError):  # nothing to read; a TLS socket cannot peek
        return False
    except OSError:
        return True


class Tracked:
    """WSGI middleware: stamps the arrival (where the worker did not) and reports each answer's delivery."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(
        self, environ: MutableMapping[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Run the app; its body comes back wrapped."""
        deadline.arrived(environ)
        hooks: list[Hook] = []
        environ[HOOKS] = hooks
        return _Answer(self.app(environ, start_response), environ.get("gunicorn.socket"), hooks)


class _Answer:
    """A response body that knows whether it was written."""

    def __init__(self, body: Iterable[bytes], sock: Any, hooks: list[Hook]) -> None:
        self.body, self.sock, self.hooks = body, sock, hooks
        self.delivery = NOT_SENT

    def __iter__(self) -> Iterator[bytes]:
        if self.hooks and self.sock is not None and peer_gone(self.sock):
            self.delivery = CLIENT_GONE
            raise BrokenPipeError(errno.EPIPE, "the client closed the connection before its answer")
        self.delivery = CLIENT_GONE  # until the server comes back for more after the last piece
        yield from self.body
        self.delivery = SENT

    def close(self) -> None:
        """Close the body, then tell each hook how its answer went."""
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            for hook in self.hooks:
                try:
                    hook(self.delivery)
                except Exception:
                    log.exception("answer hook failed")
