"""A gunicorn worker that slow or idle clients cannot starve: a request reaches a thread only whole.

gunicorn's own `gthread` worker hands every new connection to a thread at once (which then waits up
to 5 s for a first byte) and reads the request with blocking calls in that thread, so that clients
that send nothing, or trickle a request a byte at a time, hold every thread. This worker keeps each
new connection in the worker's event loop, reading what arrives without blocking, until the request
head and its body are complete; only then does a thread parse and answer it (from the bytes already
read). A request not complete within REQUEST_READ_TIMEOUT_S is dropped. The thread pool, the parser,
the access log and the shutdown are gunicorn's.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

# The marketplace sends a call of a few hundred bytes at once and waits 5 s for the answer.
REQUEST_READ_TIMEOUT_S = 10.0
# Largest request held in memory while it arrives; a bigger one goes to a thread at once (the app
# answers 413 without reading it).
MAX_BUFFERED_BYTES = 1024 * 1024
RECV_BYTES = 65536
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# What the worker tells the app in the WSGI environ: when the request's first byte was read
# (time.monotonic()), and how many threads the worker has.
ARRIVED = "isvserver.arrived"
THREADS = "isvserver.threads"


def request_complete(received: bytes, max_buffered: int = MAX_BUFFERED_BYTES) -> bool:
    """Whether `received` holds a whole HTTP/1.x request (head and body), or too much to wait for."""
    end = received.find(b"\r\n\r\n")
    if end < 0:
        return len(received) >= max_buffered
    length = 0
    chunked = False
    for line in received[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return True  # malformed: the parser answers 400
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    body = len(received) - end - 4
    if chunked:
        # The last chunk (0) and the empty line (or trailers) that end a chunked body.
        return (received.endswith(b"\r\n\r\n") and body >= 5) or len(received) >= max_buffered
    return body >= length or length > max_buffered


def expects_continue(received: bytes) -> bool:
    """Whether a complete request head asks for `100 Continue` before its body."""
    end = received.find(b"\r\n\r\n")
    head = received[: end if end >= 0 else len(received)].lower()
    return b"\r\nexpect:" in head and b"100-continue" in head


class BufferedThreadWorker(ThreadWorker):
    """gthread whose event loop, not a thread, waits for each request to arrive whole."""

    def load_wsgi(self) -> None:
        """Load the app, wrapped to find its request's arrival time (and the thread count) in the environ."""
        super().load_wsgi()
        app, arrivals, threads = self.wsgi, threading.local(), self.cfg.threads
        self._arrivals = arrivals

        def stamped(environ: dict[str, Any], start_response: Any) -> Any:
            # Taken once: a request that did not pass handle_request (HTTP/2) never gets an older one's.
            environ[ARRIVED] = arrivals.__dict__.pop("value", None) or time.monotonic()
            environ[THREADS] = threads
            return app(environ, start_response)

        self.wsgi = stamped

    def handle_request(self, req: Any, conn: TConn) -> Any:
        """Answer one parsed request, its arrival the first byte's (a keep-alive request's: now)."""
        self._arrivals.value = conn.__dict__.pop("arrived", None) or time.monotonic()
        return super().handle_request(req, conn)

    def accept(self, listener: socket.socket) -> None:
        """Accept a connection and wait, in the event loop, for its request (TLS in gunicorn itself,
        where the bytes are not the request yet: as gthread does)."""
        if self.cfg.is_ssl:
            super().accept(listener)
            return
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        conn.received = bytearray()
        conn.continued = False
        conn.timeout = time.monotonic() + REQUEST_READ_TIMEOUT_S
        self.pending_conns.append(conn)  # sorted by timeout: murder_pending closes the late ones
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._receive, conn))

    def _receive(self, conn: TConn, sock: socket.socket) -> None:
        """Read what has arrived; hand the request to a thread once it is whole."""
        try:
            data = sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before its request was whole
            self._forget(conn)
            self.nr_conns -= 1
            conn.close()
            return
        if not conn.received:
            conn.arrived = time.monotonic()  # the request's first byte
        conn.received += data
        if not conn.continued and expects_continue(conn.received) and b"\r\n\r\n" in conn.received:
            conn.continued = True
            with contextlib.suppress(OSError):
                sock.send(CONTINUE)
        if request_complete(conn.received):
            self._forget(conn)
            conn.data_ready = True
            self.enqueue_req(conn)

    def _forget(self, conn: TConn) -> None:
        """Stop waiting for `conn` in the event loop."""
        self.poller.unregister(conn.sock)
        self.pending_conns.remove(conn)

    def handle(self, conn: TConn) -> Any:
        """Parse and answer a request from the bytes already read (in a thread)."""
        received = getattr(conn, "received", None)
        if received is not None and not conn.initialized:
            conn.sock.setblocking(True)
            conn.init()
            unreader = conn.parser.unreader
            unreader.unread(bytes(received))
            conn.received = None
            # Whatever is still read from the socket (a body past MAX_BUFFERED_BYTES) is bounded too.
            unreader.sock = DeadlineSocket(unreader.sock, conn.timeout)
        return super().handle(conn)


class DeadlineSocket:
    """A blocking socket whose reads end (as if the client had gone) at a deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes, or b"" once the deadline has passed."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return b""
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(size)
        except TimeoutError:
            return b""
        finally:
            self.sock.settimeout(None)

    def __getattr__(self, name: str) -> Any:
        """Everything else as the socket does it."""
        return getattr(self.sock, name)
