"""Byte counts for people: one formatter, binary units with IEC names (KiB, MiB, GiB, ...).

Binary because the figures hfd shows are memory budgets, file sizes and disk space, which the
kernel and the tools beside hfd (``free -h``, ``ls -lh``, ``du -h``) report in powers of 1024;
one unit system everywhere means a model's ``hfd ls`` size, its ``hfd pull`` progress and its
``hfd ps`` memory can be compared at a glance.
"""

from __future__ import annotations

from typing import Final

UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``3.0 MiB`` ... one decimal above bytes; negative counts keep their sign.

    The unit is chosen after rounding, so 1023.96 KiB reads ``1.0 MiB`` and never ``1024.0 KiB``.
    """
    value = float(n)
    if abs(value) < 1024:
        return f"{value:.0f} B"
    for unit in UNITS[1:]:
        value /= 1024
        if abs(round(value, 1)) < 1024 or unit == UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover
