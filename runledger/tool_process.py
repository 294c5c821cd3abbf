"""Settings for the short-lived processes of the `verify` and `replay` commands.

Pandas and NumPy are kept out of them, since they never use either.

pyarrow imports pandas the first time it builds an array, only to ask whether its input is a
DataFrame, and NumPy as it is imported (pyarrow works without it since version 16: only its
NumPy conversions need it). Importing pandas was about a third of those commands' start-up, and
NumPy ~0.07 s of CPU of the rest (measured with `python -X importtime`); a replay never touches a
DataFrame or an ndarray (the fold and DuckDB exchange Arrow tables and Python values).
`keep_out_pandas()` makes `import pandas` and `import numpy` fail at once in this process, so
pyarrow's shims take them as absent (as on a machine without them). The server does not call
it: its dialects hand DataFrames and ndarrays to pyarrow.
"""

from __future__ import annotations

import gc
import importlib.abc
import importlib.machinery
import os
import sys
import time
from types import ModuleType
from typing import Any, Sequence


# Top-level packages whose import fails in these processes.
KEPT_OUT = frozenset({"pandas", "numpy"})


class _Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Sequence[str] | None = None, target: Any = None) -> Any:
        if name.partition(".")[0] in KEPT_OUT:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        raise ModuleNotFoundError(f"{spec.name} is kept out of this process ({__name__})", name=spec.name)

    def exec_module(self, module: ModuleType) -> None:  # never reached: create_module refuses
        raise ModuleNotFoundError(module.__name__)


def keep_out_pandas() -> None:
    """Make `import pandas` and `import numpy` fail in this process (a no-op once either is
    imported: they would be half there)."""
    if any(name in sys.modules for name in KEPT_OUT) or any(isinstance(f, _Absent) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Absent())


def lean() -> None:
    """Pandas and NumPy kept out, and the cyclic garbage collector run less often: a replay makes
    millions of small objects that mostly live to the end (imported modules, the fold's cache),
    and with the default thresholds (700, 10, 10) the collector kept re-scanning them (~10% of
    py-spy's samples of `verify`; ~5% of its CPU saved, 1M points + 10k events). Reference
    counting still frees everything that is not in a cycle at once."""
    keep_out_pandas()
    gc.set_threshold(100_000, 50, 100)


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc, to 10 ms), so a command can
    report what the interpreter's start-up and its first imports took; 0.0 elsewhere."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")   # field 22: start, clock ticks after boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


class Phases:
    """Wall and CPU seconds (all threads) of a command's consecutive phases, for a one-line split
    of where its time went (`runledger verify` prints it; the audit bench shows it)."""

    def __init__(self) -> None:
        age = process_age()
        # The first phase, up to now: the interpreter's start-up and the imports before us.
        self.items: list[tuple[str, float, float]] = [("start-up", age, time.process_time())]
        self._wall, self._cpu = time.monotonic(), time.process_time()
        self.side: list[str] = []

    def mark(self, name: str) -> None:
        """Close the phase that ran since the last mark under `name`."""
        wall, cpu = time.monotonic(), time.process_time()
        self.items.append((name, wall - self._wall, cpu - self._cpu))
        self._wall, self._cpu = wall, cpu

    def note(self, text: str) -> None:
        """Something that ran alongside (on another thread), shown after the split."""
        self.side.append(text)

    def line(self) -> str:
        wall = sum(w for _, w, _ in self.items)
        cpu = time.process_time()
        parts = " · ".join(f"{name} {w:.2f} ({c:.2f} cpu)" for name, w, c in self.items)
        side = f"; alongside: {', '.join(self.side)}" if self.side else ""
        return f"time {wall:.2f}s wall, {cpu:.2f}s cpu: {parts}{side}"
