"""One health probe: a TCP connect, or an HTTP/1.0 GET whose status must match (asyncio).

Probes run in the calling thread's network namespace (the checker's thread lives in the
target's namespace). An HTTP check reads only the status line, as keepalived's
HTTP_GET with ``status_code`` and HAProxy's ``http-check expect status`` decide by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from dcnet.health.checks import CheckKey


async def probe(key: CheckKey, timeout: float) -> tuple[bool, str]:
    """(ok, detail) of one check within ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(_probe(key), timeout)
    except TimeoutError:
        return False, f"no answer in {timeout:g}s"
    except OSError as exc:              # asyncio's text repeats the address: use errno's
        return False, os.strerror(exc.errno) if exc.errno else str(exc)


async def _probe(key: CheckKey) -> tuple[bool, str]:
    reader, writer = await asyncio.open_connection(key.address, key.port)
    try:
        if key.kind != "http":
            return True, "connected"
        host = f"[{key.address}]" if ":" in key.address else key.address
        writer.write(f"GET {key.path} HTTP/1.0\r\nHost: {host}\r\n"
                     "User-Agent: dcnet-health\r\n\r\n".encode())
        await writer.drain()
        line = (await reader.readline()).decode("latin-1").strip()
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return False, f"not an HTTP answer: {line[:60]!r}"
        status = int(parts[1])
        return status == key.status, f"status {status}"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
