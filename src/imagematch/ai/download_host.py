"""Whether a host that models are downloaded from can be reached, found out in bounded time."""

from __future__ import annotations

import socket
import threading

PROBE_SECONDS = 5.0


def unreachable(host: str, port: int, timeout: float = PROBE_SECONDS) -> str | None:
    """Why `host:port` cannot be reached within `timeout` seconds, or None when a connection opens.

    The timeout covers the name lookup too. socket.create_connection's own timeout starts after it, and on a
    machine whose name server does not answer (a network cable out, a firewall) the lookup alone waits for the
    resolver's retries, ten seconds and more. So the probe runs in a thread that is waited for at most
    `timeout`; one left waiting on the resolver is a daemon and does not keep the process alive.
    """
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as error:
            outcome.append(error.strerror or str(error))
        else:
            outcome.append(None)

    thread = threading.Thread(target=probe, name=f"probe {host}", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"
