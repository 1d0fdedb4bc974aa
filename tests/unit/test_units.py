"""The one byte formatter: binary units, IEC names."""

from __future__ import annotations

import pytest

from hfd._units import format_bytes


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (3 * 1024**2, "3.0 MiB"),
        (1024**2 - 1, "1.0 MiB"),  # rounds to 1024.0 KiB, so it is shown in the next unit
        (int(1.5 * 1024**3), "1.5 GiB"),
        (2 * 1024**4, "2.0 TiB"),
        (5 * 1024**6, "5120.0 PiB"),  # the largest unit takes whatever is left
        (-3 * 1024**2, "-3.0 MiB"),
        (2.5e9, "2.3 GiB"),  # a "2.5 GB" file is 2.3 GiB
    ],
)
def test_format_bytes(n: float, text: str) -> None:
    assert format_bytes(n) == text


def test_pull_progress_counts_in_the_units_ps_uses() -> None:
    """``hfd pull`` once showed kB/MB/GB while ``hfd ps`` showed GiB."""
    from hfd.daemon.store.pull import DOWNLOADING, PullProgress, format_line

    line = format_line(
        PullProgress(
            "acme/m", DOWNLOADING, source="hub", completed=512 * 1024**2, total=1024**3, speed=3 * 1024**2
        )
    )
    assert "512.0 MiB/1.0 GiB" in line and "3.0 MiB/s" in line
