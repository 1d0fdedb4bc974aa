"""hfd: a per-machine model daemon.

Importing `hfd` is cheap: it pulls in no engine (torch, OpenVINO, ONNX Runtime). The daemon
lives in `hfd.daemon`, the client library in `hfd.client`, engines in `hfd.backends` and the
IPFS transport in `hfd.ipfs`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hfd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
