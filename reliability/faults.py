"""A fake Slack Web API that also answers late: the client's timeout fires, Slack applied it.

``FaultySlack`` is ``tests.fake_slack.FakeSlack`` (429 with Retry-After and 5xx through
``fail_next``) plus ``delay_next``: the request is applied and recorded at once, as Slack would,
but the answer is held back ``seconds``, so a client with a shorter timeout gives up on a call
that did happen. That is the hard case for "exactly once": a retry must not apply it twice.
"""

from __future__ import annotations

import collections
import time

from tests.fake_slack import Answer, FakeSlack


class FaultySlack(FakeSlack):
    """FakeSlack with late answers (client timeouts) on top of its injected failures."""

    def __init__(self) -> None:
        super().__init__()
        self._delays: dict[str, collections.deque[float]] = {}
        self.delayed = 0

    def delay_next(self, method: str, *, seconds: float, times: int = 1) -> None:
        """Answer the next ``times`` calls to ``method`` ``seconds`` late (applied at once)."""
        with self._lock:
            queue = self._delays.setdefault(method, collections.deque())
            queue.extend([seconds] * times)

    def reset_failures(self) -> None:
        """Drop queued failures and late answers that have not fired yet."""
        super().reset_failures()
        with self._lock:
            self._delays.clear()

    def _dispatch(self, path: str, query: str, headers: dict[str, str], body: bytes) -> Answer:
        answer = super()._dispatch(path, query, headers, body)
        method = path.removeprefix("/api/") if path.startswith("/api/") else ""
        with self._lock:
            queue = self._delays.get(method)
            delay = queue.popleft() if queue else 0.0
            if delay:
                self.delayed += 1
        if delay:
            time.sleep(delay)
        return answer
