"""dcnet-init's push of its lifecycle to a Prometheus Pushgateway (``--pushgateway`` or
``$DCNET_PUSHGATEWAY``): a container's init is short-lived next to a scrape interval, so
it pushes instead of being scraped.

Standard library only (the init's start-up path imports nothing else): the text format
is written here and sent by HTTP ``PUT`` to ``/metrics/job/dcnet_init/jobname/<JOBNAME>/
instance/<hostname>`` (label values URL-encoded; the Pushgateway's ``@base64`` form when
empty). Pushes run in a thread so the supervisor loop never waits on the network, except
the last one at exit, which waits at most ``timeout`` seconds. A failed push is logged,
never fatal.
"""

from __future__ import annotations

import base64
import socket
import threading

JOB = "dcnet_init"
HELP = {
    "dcnet_init_start_timestamp_seconds": "When dcnet-init started the app",
    "dcnet_init_healthy_seconds": "Seconds from start to the first healthy check",
    "dcnet_init_registered": "1 once the start hooks (ELB registration) succeeded",
    "dcnet_init_hook_failures": "Hook commands that failed or timed out, by sequence",
    "dcnet_init_drain_seconds": "Seconds the drain hooks took (SIGTERM to app signalled)",
    "dcnet_init_exit_code": "The app's exit code (128+signal when killed)",
    "dcnet_init_reaped_orphans": "Re-parented orphans reaped",
    "dcnet_init_last_push_timestamp_seconds": "When this push was made",
}


def _segment(name: str, value: str) -> str:
    """One ``/<label>/<value>`` path segment as the Pushgateway reads it."""
    import urllib.parse

    if not value:
        return f"/{name}@base64/="
    if "/" in value:
        encoded = base64.urlsafe_b64encode(value.encode()).decode()
        return f"/{name}@base64/{encoded}"
    return f"/{name}/{urllib.parse.quote(value, safe='')}"


def url_of(gateway: str, jobname: str, instance: str) -> str:
    base = gateway if "://" in gateway else f"http://{gateway}"
    return (base.rstrip("/") + f"/metrics/job/{JOB}" + _segment("jobname", jobname)
            + _segment("instance", instance))


def render(values: dict) -> str:
    """The text format of ``values``: ``{name: number}`` or ``{name: {label_value:
    number}}`` (the one label is ``sequence``)."""
    lines = []
    for name, value in values.items():
        if value is None:
            continue
        lines.append(f"# HELP {name} {HELP.get(name, name)}")
        lines.append(f"# TYPE {name} gauge")
        if isinstance(value, dict):
            lines += [f'{name}{{sequence="{k}"}} {float(v)!r}' for k, v in value.items()]
        else:
            lines.append(f"{name} {float(value)!r}")
    return "\n".join(lines) + "\n"


class Pusher:
    """Pushes to one Pushgateway group; ``log`` reports failures."""

    def __init__(self, gateway: str, jobname: str, log, instance: str | None = None,
                 timeout: float = 5.0):
        self.url = url_of(gateway, jobname, instance or socket.gethostname())
        self.log, self.timeout = log, timeout
        self.threads: list[threading.Thread] = []

    def push(self, values: dict) -> threading.Thread:
        """Push in the background (a push replaces the group's previous one)."""
        thread = threading.Thread(target=self._put, args=(render(values),), daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def final(self, values: dict) -> None:
        """The last push: wait for earlier ones, then this one, ``timeout`` at most."""
        for thread in self.threads:
            thread.join(self.timeout)
        self.push(values).join(self.timeout)

    def _put(self, body: str) -> None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.url, data=body.encode(), method="PUT",
                                         headers={"Content-Type": "text/plain; version=0.0.4"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                answer.read()
        except urllib.error.HTTPError as exc:
            exc.close()                   # it holds the response
            self.log(f"push to the Pushgateway {self.url} failed: HTTP {exc.code}")
        except OSError as exc:            # URLError, refused, timed out
            self.log(f"push to the Pushgateway {self.url} failed: {exc}")
