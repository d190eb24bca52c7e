"""Sans-I/O HTTP/2 (RFC 9113) for the head's relay: bytes in, handler calls out, bytes
to send read back. No sockets, no asyncio: `relay.py` drives it over asyncio, and the
unit tests and fuzzers drive it with plain bytes.

* `frames`: wire constants, frame encoding, `ProtocolError` (importable without the rest:
  the HEALTHCHECK probe uses it and must start fast).
* `limits`: every limit a peer could abuse, as one frozen `Limits` value with safe
  defaults, the validation of a peer's SETTINGS, flood budgets, and the memory ceiling.
* `connection`: streams, flow control, stream states and the connection state machine.

This package imports nothing on purpose: import the module you need.
"""
