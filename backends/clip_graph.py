"""CLIP and SigLIP on ONNX Runtime and OpenVINO: the text and vision towers as two graphs.

Each tower is exported once into the export cache (the encoders' cache and safety rules: no
pickles unless allowed, no remote code unless trusted): ``text`` maps ``input_ids`` (and CLIP's
``attention_mask``) to ``get_text_features``, ``vision`` maps ``pixel_values`` to
``get_image_features``, batch (and text length) dynamic. ONNX Runtime's graphs come from the
dynamo exporter, OpenVINO's IR from ``openvino.convert_model`` on the same towers. A fresh export
is checked against transformers on texts and images it was not traced with (cosine of every
vector, recorded in ``hfd-check.json``); a failed check keeps it from being used.

The pre-processing is the torch engine's (``clip_torch.text_inputs``, ``pixel_values``: the
model's tokenizer and PIL image processor), so every engine sees the same inputs.

Nothing here imports torch, onnxruntime or openvino at module import time.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hfd.backends import clip_torch, encoder_check
from hfd.backends.base import LoadOptions
from hfd.client.errors import HfdError, ModelUnavailable

log = logging.getLogger(__name__)

# Bump when the way the towers are exported changes, so old exports are not reused.
EXPORT_REVISION = 1
THRESHOLD = 0.999
FILES = {
    "onnxruntime": {"text": "text.onnx", "vision": "vision.onnx"},
    "openvino": {"text": "openvino_text_model.xml", "vision": "openvino_vision_model.xml"},
}
_DIST = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
_CHECK_TEXTS = ["a photo of a cat", "two dogs play in the garden near the river", "hola", "x y z"]

Run = Callable[[dict[str, np.ndarray]], np.ndarray]


class GraphImageText:
    """CLIP/SigLIP text and image vectors from two exported towers; the same members as
    ``clip_torch.TorchImageText``."""

    weight_format = "fp32"
    threads = 0

    def __init__(
        self, name: str, config: Any, tokenizer: Any, image_processor: Any, text: Run, vision: Run,
        *, device: str, files: list[Path],
    ) -> None:  # fmt: skip
        self.name = name
        self.device = device
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.siglip = clip_torch.is_siglip(config)
        self.max_length = clip_torch.text_length(config)
        self.dimensions = clip_torch.projection_dimensions(config)
        self._text, self._vision = text, vision
        self._files = files

    def count_tokens(self, texts: list[str]) -> int:
        return clip_torch.count_tokens(self.tokenizer, texts, self.max_length)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        inputs = clip_torch.text_inputs(
            self.tokenizer, texts, siglip=self.siglip, max_length=self.max_length, tensors="np"
        )
        return _f32(self._text({k: np.asarray(v, dtype=np.int64) for k, v in inputs.items()}))

    def embed_images(self, images: list[Any]) -> np.ndarray:
        pixels = clip_torch.pixel_values(self.image_processor, images, tensors="np")
        return _f32(self._vision({"pixel_values": np.asarray(pixels, dtype=np.float32)}))

    def memory_bytes(self) -> int:
        return sum(f.stat().st_size for f in self._files if f.is_file())

    def close(self) -> None:
        self._text = self._vision = _closed


def _closed(inputs: dict[str, np.ndarray]) -> np.ndarray:
    raise ModelUnavailable("the model was unloaded")


def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a), dtype=np.float32)


def load(opts: LoadOptions, engine: str) -> GraphImageText:
    """The towers of the snapshot at ``opts.path`` on ``engine`` ("onnxruntime" or "openvino")."""
    from transformers import AutoConfig, AutoTokenizer

    start = time.perf_counter()
    export_dir, built = prepare(opts, engine)
    config = AutoConfig.from_pretrained(opts.path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(opts.path, local_files_only=True)
    processor = clip_torch.image_processor(opts.path)
    paths = {tower: export_dir / f for tower, f in FILES[engine].items()}
    if engine == "onnxruntime":
        runs, device = _onnx_runs(paths, opts.device, opts.threads), opts.device
    else:
        from hfd.backends.openvino_backend import _compile_properties, ov_device

        device = ov_device(opts.device)
        runs = _openvino_runs(paths, device, _compile_properties(opts, device))
    files = [f for f in export_dir.iterdir() if f.suffix in (".onnx", ".data", ".bin", ".xml")]
    model = GraphImageText(
        engine, config, tokenizer, processor, runs["text"], runs["vision"], device=device, files=files
    )
    model.threads = opts.threads
    log.info("image-text towers loaded",
             extra={"engine": engine, "model_path": str(opts.path), "device": device, "exported": built,
                    "seconds": round(time.perf_counter() - start, 3)})  # fmt: skip
    return model


def _onnx_runs(paths: dict[str, Path], device: str, threads: int) -> dict[str, Run]:
    import onnxruntime as ort

    from hfd.backends.onnx_backend import providers_for, session_options

    options, providers = session_options(device, threads), providers_for(device)
    runs: dict[str, Run] = {}
    for tower, path in paths.items():
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:
            raise ModelUnavailable(f"onnxruntime cannot load {path}: {exc}") from exc
        runs[tower] = _session_run(session)
    return runs


def _session_run(session: Any) -> Run:
    names = [i.name for i in session.get_inputs()]
    return lambda inputs: session.run(None, {n: inputs[n] for n in names})[0]


def _openvino_runs(paths: dict[str, Path], device: str, properties: dict[str, Any]) -> dict[str, Run]:
    import openvino as ov

    core = ov.Core()
    runs: dict[str, Run] = {}
    for tower, path in paths.items():
        try:
            compiled = core.compile_model(str(path), device, {"PERFORMANCE_HINT": "LATENCY", **properties})
        except Exception as exc:
            raise ModelUnavailable(f"OpenVINO cannot compile {path} for {device}: {exc}") from exc
        runs[tower] = _compiled_run(compiled)
    return runs


def _compiled_run(compiled: Any) -> Run:
    names = [i.get_any_name() for i in compiled.inputs]
    request = compiled.create_infer_request()

    def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
        request.infer({n: inputs[n] for n in names})
        return np.array(request.get_output_tensor(0).data)

    return run


# -- export -------------------------------------------------------------------------------------


def prepare(opts: LoadOptions, engine: str) -> tuple[Path, bool]:
    """The export directory of the towers for ``engine``, exported and checked on first use."""
    from hfd.backends.exports import dist_version
    from hfd.backends.graph_heads import export_checked

    options = {"format": engine, "task": "image-text-towers", "revision": EXPORT_REVISION,
               "torch": dist_version("torch"), "transformers": dist_version("transformers")}  # fmt: skip
    return export_checked(
        opts, engine, dist_version(_DIST[engine]), options,
        lambda out, allow_pickle: export(opts.path, out, engine, opts.trust_remote_code, allow_pickle),
    )  # fmt: skip


def export(source: Path, out: Path, engine: str, trust_remote_code: bool, allow_pickle: bool) -> None:
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from hfd.backends.graph_heads import fp32_model
    except Exception as exc:
        raise ModelUnavailable(
            f"exporting CLIP/SigLIP needs torch and transformers (hfd[torch]): {exc}"
        ) from exc
    log.info("image-text export", extra={"model_path": str(source), "engine": engine})
    try:
        model = fp32_model(AutoModel, source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        processor = clip_torch.image_processor(source)
        siglip, length = clip_torch.is_siglip(model.config), clip_torch.text_length(model.config)
        text = clip_torch.text_inputs(
            tokenizer, _CHECK_TEXTS[:2], siglip=siglip, max_length=length, tensors="pt"
        )
        pixels = clip_torch.pixel_values(processor, _images(2), tensors="pt")
        towers = {
            "text": (_Tower(model, "text"), dict(text)),
            "vision": (_Tower(model, "vision"), {"pixel_values": pixels}),
        }
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for tower, (module, example) in towers.items():
                _export_tower(module, example, out / FILES[engine][tower], engine)
    except HfdError:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"{engine} export of {source} failed: {exc}") from exc
    _check(model, tokenizer, processor, out, engine)


def _export_tower(module: Any, example: dict[str, Any], path: Path, engine: str) -> None:
    """One tower through ``torch.export`` (batch and text length symbolic): to ONNX with the
    dynamo exporter, or to IR with ``openvino.convert_model`` on the exported program (the
    TorchScript tracer fails on transformers' CLIP)."""
    import torch

    auto = torch.export.Dim.AUTO
    shapes = {name: ({0: auto} if name == "pixel_values" else {0: auto, 1: auto}) for name in example}
    if engine == "openvino":
        import openvino as ov

        program = torch.export.export(module, (), kwargs=example, dynamic_shapes=shapes)
        ov.save_model(ov.convert_model(program), path, compress_to_fp16=False)
        return
    from hfd.backends.onnx_backend import export_dynamo

    export_dynamo(module, tuple(example.values()), path, list(example), ["embeds"], shapes, module)


def _images(n: int) -> list[Any]:
    from PIL import Image

    rng = np.random.RandomState(n)
    return [Image.fromarray(rng.randint(0, 256, (40 + 9 * i, 48, 3), dtype=np.uint8)) for i in range(n)]


def _check(model: Any, tokenizer: Any, processor: Any, out: Path, engine: str) -> None:
    """Texts and images the export was not traced with, through transformers and the export."""
    import torch

    siglip, length = clip_torch.is_siglip(model.config), clip_torch.text_length(model.config)
    paths = {tower: out / f for tower, f in FILES[engine].items()}
    if engine == "onnxruntime":
        runs = _onnx_runs(paths, "cpu", 1)
    else:
        runs = _openvino_runs(paths, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    text = clip_torch.text_inputs(tokenizer, _CHECK_TEXTS, siglip=siglip, max_length=length, tensors="pt")
    pixels = clip_torch.pixel_values(processor, _images(3), tensors="pt")
    with torch.no_grad():
        expected = [clip_torch._vectors(model.get_text_features(**text)),
                    clip_torch._vectors(model.get_image_features(pixel_values=pixels))]  # fmt: skip
    try:
        got = [_f32(runs["text"]({k: v.numpy() for k, v in text.items()})),
               _f32(runs["vision"]({"pixel_values": pixels.numpy()}))]  # fmt: skip
        worst = min(float(_cosines(a, b).min()) for a, b in zip(expected, got, strict=True))
        result: dict[str, Any] = {
            "passed": worst >= THRESHOLD,
            "min_cosine": round(worst, 6),
            "threshold": THRESHOLD,
        }
        if not result["passed"]:
            result["reason"] = (
                f"vectors differ from transformers' (least cosine {worst:.4f}, {THRESHOLD} needed)"
            )
    except Exception as exc:
        result = {"passed": False, "reason": f"the export failed on the check inputs: {exc}"}
    encoder_check.write(out, result)
    log.info("image-text export checked", extra={"engine": engine, **result})


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.shape != b.shape:
        return np.zeros(1)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.asarray((a * b).sum(-1) / np.where(norms > 0, norms, 1.0))


def _Tower(model: Any, tower: str) -> Any:
    import torch

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
        ) -> torch.Tensor:
            kwargs = {"input_ids": input_ids}
            if attention_mask is not None:
                kwargs["attention_mask"] = attention_mask
            return _tensor(self.model.get_text_features(**kwargs))

    class Vision(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return _tensor(self.model.get_image_features(pixel_values=pixel_values))

    return Text() if tower == "text" else Vision()


def _tensor(out: Any) -> Any:
    return out if hasattr(out, "detach") else out.pooler_output
