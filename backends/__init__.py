"""Engines. Nothing here imports an engine at module import time: each engine is registered
by name with a lazy import string (see ``hfd.backends.registry``)."""
