"""Checking the addresses and ports of tf.data service servers, without importing TensorFlow.

The CLI checks `--data-service`, `--dispatcher` and `--port` with these before it
loads TensorFlow, so a typo is one line at once (`mmkeras.data.data_service`
uses them too).

Example:
>>> parse_address("trainer-1:5050", "--dispatcher")
('trainer-1', 5050)
"""

import re

from mmkeras.errors import UserError

# grpc://HOST:PORT or HOST:PORT; HOST a name, an IPv4 address or a bracketed IPv6 address.
_ADDRESS = re.compile(r"^(?:grpc://)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")


def parse_address(address: str, flag: str) -> tuple[str, int]:
    """`(host, port)` of `grpc://HOST:PORT` or `HOST:PORT`; anything else is a `UserError` naming `flag`.

    Example:
    >>> parse_address("grpc://10.0.0.5:5050", "--data-service")
    ('10.0.0.5', 5050)
    """
    match = _ADDRESS.match(address.strip())
    port = int(match["port"]) if match else 0
    if not match or not 0 < port < 65536:
        raise UserError(f"{flag} must be grpc://HOST:PORT or HOST:PORT with a port in 1..65535, got {address!r}")
    return match["host"], port


def check_port(port: int, flag: str, *, any_free: bool):
    """A port to listen on: 1..65535 (or 0, any free port, when `any_free`), else a `UserError` naming `flag`."""
    lowest = 0 if any_free else 1
    if not lowest <= port < 65536:
        raise UserError(f"{flag} must be a port in {lowest}..65535, got {port}")
