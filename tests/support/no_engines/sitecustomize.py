"""Makes the engine libraries unimportable, as on a machine with only hfd's core installed.

``scripts/test`` runs the unit tier once more with this folder on ``PYTHONPATH`` (Python
imports ``sitecustomize`` at start-up), so a unit test that needs torch, transformers,
OpenVINO or ONNX Runtime without saying so (``pytest.importorskip``) fails there: the unit tier
is what runs where no engine is installed (a client-only install, a fresh checkout).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

ENGINE_LIBRARIES = frozenset(
    {
        "torch",
        "transformers",
        "sentence_transformers",
        "optimum",
        "openvino",
        "openvino_genai",
        "openvino_tokenizers",
        "nncf",
        "onnxruntime",
        "xgrammar",
    }
)


class _NoEngines:
    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.partition(".")[0] in ENGINE_LIBRARIES:
            raise ModuleNotFoundError(f"No module named {name!r} (engine libraries are hidden)", name=name)
        return None


sys.meta_path.insert(0, _NoEngines())
