"""Progress lines for the operator's long steps (Kafka download, broker start, read-model rebuild).

On a terminal one line is rewritten in place; in a log (not a terminal) a line is printed at
most every `every` seconds, so `docker logs` and CI output show progress without flooding.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, stream: TextIO | None = None, every: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self._last = 0.0
        self._width = 0

    def update(self, text: str) -> None:
        now = time.monotonic()
        if self.tty:
            # Throttled too: redrawing faster than the eye reads only costs CPU.
            if now - self._last < 0.1:
                return
            self._last = now
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
        elif now - self._last >= self.every:
            self._last = now
            self.stream.write(text + "\n")
            self.stream.flush()

    def done(self, text: str) -> None:
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._width = 0
        self._last = 0.0


def eta(done: float, total: float, seconds: float) -> str:
    """'ETA 12s' from the rate so far; '' when it cannot be told yet."""
    if done <= 0 or seconds <= 0 or total <= done:
        return ""
    left = (total - done) * seconds / done
    return f"ETA {left:.0f}s" if left < 120 else f"ETA {left / 60:.0f} min"
