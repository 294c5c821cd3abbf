"""MLflow's experiment permission levels: READ < EDIT < MANAGE; NO_PERMISSIONS reads nothing.
(MLflow 3.x also knows USE and DENY; grants of those names are refused with a clear message.)"""

from __future__ import annotations

import enum


class Permission(enum.IntEnum):
    NO_PERMISSIONS = 0
    READ = 1
    EDIT = 2      # write runs, metrics, params, tags
    MANAGE = 3    # also delete, rename, grant

    @classmethod
    def parse(cls, name: str) -> "Permission":
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(f"Invalid permission {name!r}: use one of "
                             f"{', '.join(p.name for p in cls)}.") from None
