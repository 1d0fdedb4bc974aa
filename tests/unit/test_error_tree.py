"""Every error class the daemon raises is in the one tree (``hfd.client.errors``), so its stable
code crosses the wire and the client rebuilds the same class."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import hfd.backends
import hfd.daemon
import hfd.ipfs
from hfd.client import errors
from hfd.client.errors import HfdError, InternalError, error_from_dict


def _tree() -> list[type[HfdError]]:
    out: list[type[HfdError]] = []
    todo: list[type[HfdError]] = [HfdError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("KeyStoreError", "keystore_error"),
        ("CurveKeyError", "invalid_curve_key"),
        ("UsageLogError", "usage_log_error"),
    ],
)
def test_a_server_side_fault_crosses_the_wire_as_its_own_class(name: str, code: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, InternalError)
    rebuilt = error_from_dict(cls("the key database is locked").to_dict())
    assert type(rebuilt) is cls
    assert (rebuilt.code, rebuilt.status) == (code, 500)


def test_the_daemon_raises_the_trees_classes_under_their_old_names() -> None:
    from hfd.daemon.access.keys import KeyStoreError
    from hfd.daemon.access.usage import UsageError
    from hfd.daemon.access.zap import CurveKeyError

    assert (KeyStoreError, CurveKeyError, UsageError) == (
        errors.KeyStoreError,
        errors.CurveKeyError,
        errors.UsageLogError,
    )


def test_no_error_code_is_defined_outside_the_tree() -> None:
    """A subclass defined elsewhere with a code of its own would reach the client as a bare
    ``HfdError``: the client only knows the codes of ``hfd.client.errors``."""
    for package in (hfd.daemon, hfd.backends, hfd.ipfs):
        for mod in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            try:
                importlib.import_module(mod.name)
            except ImportError:  # an engine whose library is not installed
                continue
    known = set(errors.ERRORS_BY_CODE)
    stray = {f"{c.__module__}.{c.__qualname__}": c.code for c in _tree() if c.code not in known}
    assert stray == {}
