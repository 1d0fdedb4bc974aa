"""Shared fixtures. Tests build their models locally (tests/support/models.py) and only ever
talk to 127.0.0.1."""

from __future__ import annotations

import os

# Nothing in the test suite may reach the Hub or any other network service.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
