"""What the web worker tells the app about a request in its WSGI environ (names any WSGI server may set)."""

# time.monotonic() when the request's first byte was read (deadlines and latencies count from it).
ARRIVED = "isvserver.arrived"
# How many threads the worker answers requests with (isvserver/deadline.py sizes its waiting slots by it).
THREADS = "isvserver.threads"
# Set when the request's body was not read as sent: TOO_LARGE (its length or a chunk size is past the
# body limit; the body was not read) or MALFORMED (its framing is broken, or bytes follow it).
BODY_PROBLEM = "isvserver.body_problem"
TOO_LARGE = "too_large"
MALFORMED = "malformed"
