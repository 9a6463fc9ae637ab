"""The HTTP client the check tools share (soak.py, sampler-check.py): standard library only, every call bounded by
its own timeout and by the run's deadline, every answer read as JSON where it is JSON."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request


class OutOfTime(Exception):
    """The run's deadline (--max-minutes) has passed."""


class WebuiHttp:
    def __init__(self, url: str, max_minutes: float, timeout: float):
        self.url = url.rstrip("/")
        self.deadline = time.monotonic() + max_minutes * 60
        self.timeout = timeout

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def http(self, method: str, path: str, body=None, timeout: float = 0):
        """(status, JSON or text); status 0 when no HTTP answer came."""
        if self.left() <= 0:
            raise OutOfTime
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, {"Content-Type": "application/json"}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=min(timeout or self.timeout, self.left())) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out
            if self.left() <= 0:  # cut short by the deadline, not the webui's fault
                raise OutOfTime from None
            return 0, f"{type(error).__name__}: {error}"
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text
