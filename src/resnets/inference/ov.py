"""The OpenVINO backend of ``optimize()``: the folded network converted by OpenVINO and compiled by its CPU plugin.

The folded network goes through OpenVINO's PyTorch conversion (``openvino.convert_model``) into an IR file;
fp32 and bf16 compile it with the matching ``INFERENCE_PRECISION_HINT`` (OpenVINO would silently run bf16
on a bf16-capable CPU otherwise); int8 is NNCF post-training quantization of it, calibrated on the user's
images.  The package's ONNX export runs about as fast and exports faster, but NNCF's int8 of the ONNX
graph is wrong on the option-A CIFAR ResNets (the converted graph's int8 keeps fp32's accuracy; the
README's Fast inference has the numbers), so the conversion it is.  Batches of one run on a model compiled with
the LATENCY hint (one stream using every core); larger batches on one compiled with the THROUGHPUT hint
(several streams), split into one chunk per optimal infer request and run at once through an
``AsyncInferQueue``: as fast as benchmark_app's way of feeding whole batches to every request, and
no slower at int8 than several chunks per request.

Everything slow is kept on disk under ``resnets.cache.cache_root() / "openvino"``, one folder per
model (a hash of its architecture and folded weights, the input size and the versions of torch,
OpenVINO and this package): the fp32 IR, each int8 IR (by a hash of its calibration images and NNCF's
version) and OpenVINO's compiled blobs (``CACHE_DIR``), so a second process skips conversion,
quantization and compilation.  The least recently used folders beyond :data:`KEEP_MODELS` are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import honour_umask
from ..cache import cache_root, writable_dir
from ..errors import BadInput, MissingExtra
from ..quiet import debug_enabled, quiet_third_party
from .prepare import int8_calibration, numpy_batch, prepare
from .table import PRECISIONS

#: ``INFERENCE_PRECISION_HINT`` per precision; int8 leaves the layers NNCF keeps in float to the
#: plugin's default (bf16 where the CPU has it), as OpenVINO's benchmark_app runs an int8 IR.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": None}
#: Model folders kept in the cache (least recently used ones beyond this go).
KEEP_MODELS = 8
#: OpenVINO's performance hints: one stream on every core, or several streams of fewer cores each.
LATENCY, THROUGHPUT = "LATENCY", "THROUGHPUT"


def _require(precision: str):
    """``openvino`` (and ``nncf`` for int8), or an ImportError naming the extra."""
    try:
        import openvino
        if PRECISIONS[precision].needs_calibration:
            with quiet_third_party():
                import nncf  # noqa: F401
    except ImportError as e:
        raise MissingExtra(f"the openvino backend needs openvino and nncf ({e.name} is missing): "
                          "pip install 'resnets[openvino]'") from e
    return openvino


@lru_cache(maxsize=1)
def _core():
    import openvino

    return openvino.Core()


def _versions() -> dict[str, str]:
    try:
        own = metadata.version("resnets")
    except metadata.PackageNotFoundError:
        own = "unknown"
    import openvino

    return {"resnets": own, "torch": torch.__version__, "openvino": openvino.__version__}


def _hash_tensors(h: "hashlib._Hash", tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def model_key(net: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The cache key of a folded network: its architecture, weights, input shape (C, H, W) and versions.

    Its output on a fixed input is hashed too: what a module computes is not all in its ``repr`` and
    weights (a feature extractor's stage and pooling are plain attributes).
    """
    h = hashlib.sha256(repr(net).encode())
    h.update(repr((tuple(input_shape), sorted(_versions().items()))).encode())
    with torch.no_grad():
        probe = net(torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0)))
    _hash_tensors(h, [*net.state_dict().items(), ("output", probe)])
    return h.hexdigest()[:24]


def _model_dir(key: str) -> Path:
    """The cache folder of one model, created, marked as just used; old ones beyond KEEP_MODELS removed."""
    root = writable_dir(cache_root() / "openvino", "OpenVINO")
    folder = root / key
    folder.mkdir(exist_ok=True)
    os.utime(folder)
    others = sorted((p for p in root.iterdir() if p.is_dir() and p != folder),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[KEEP_MODELS - 1:]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """Without NNCF's INFO lines and progress bars (rich, on stdout, where they would mix with a command's
    output); ``--debug`` shows them."""
    if debug_enabled():
        yield
        return
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with quiet_third_party(), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _save(model, xml: Path) -> Path:
    """``model`` as the IR pair ``xml`` + ``.bin`` (full-precision weights), written so that a complete
    ``.xml`` always has its ``.bin``."""
    import openvino

    with tempfile.TemporaryDirectory(dir=xml.parent, prefix=".ir-") as tmp:
        openvino.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        for name in ("model.bin", "model.xml"):
            honour_umask(Path(tmp) / name)
        os.replace(Path(tmp) / "model.bin", xml.with_suffix(".bin"))  # the .xml last: it marks a complete pair
        os.replace(Path(tmp) / "model.xml", xml)
    return xml


def _convert(net: nn.Module, input_shape: tuple[int, ...], xml: Path) -> Path:
    """The fp32 IR of the folded ``net`` (batch dynamic, the rest of ``input_shape`` fixed), unless cached."""
    import openvino

    if xml.is_file():
        return xml
    with quiet_third_party(), warnings.catch_warnings():
        # Tracing meets the models' input checks (``if x.shape[1] != ...``): true for every traced input.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)  # OpenVINO's own call
        model = openvino.convert_model(net, example_input=torch.zeros(2, *input_shape),
                                       input=[(-1, *input_shape)])
    return _save(model, xml)


def _quantize(fp32: Path, calibration: list[torch.Tensor], folder: Path) -> Path:
    """The NNCF int8 IR of the IR ``fp32`` calibrated on ``calibration`` (cached by the images' hash)."""
    import nncf

    h = hashlib.sha256(repr(sorted(_versions().items()) + [("nncf", nncf.__version__)]).encode())
    _hash_tensors(h, ((str(i), b.float()) for i, b in enumerate(calibration)))
    xml = folder / f"int8-{h.hexdigest()[:16]}.xml"
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml
    arrays = [b.detach().to(torch.float32).contiguous().numpy() for b in calibration]
    with _quiet_nncf():
        quantized = nncf.quantize(_core().read_model(str(fp32)), nncf.Dataset(arrays), subset_size=len(arrays))
    return _save(quantized, xml)


def compile_file(path: Path, precision: str, hint: str):
    """The IR ``path`` compiled for the CPU with ``hint`` (LATENCY or THROUGHPUT), blobs cached beside it."""
    config = {"PERFORMANCE_HINT": hint, "CACHE_DIR": str(path.parent / "compiled")}
    if PRECISION_HINTS[precision] is not None:
        config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[precision]
    return _core().compile_model(str(path), "CPU", config)


class OVModel(nn.Module):
    """Runs an OpenVINO-compiled file on ordinary float NCHW torch tensors and returns float32 tensors.

    A drop-in for the module :func:`resnets.optimize` returns with the torch backend.  A batch of one
    runs on the LATENCY-compiled model, a larger one on the THROUGHPUT-compiled one, split across its
    streams; each is compiled on first use (from the on-disk cache after the first process).
    """

    def __init__(self, path: Path, precision: str) -> None:
        super().__init__()
        self.path, self.precision = path, precision
        self._compiled: dict[str, object] = {}
        self._lock = threading.Lock()  # one call at a time: the requests and their outputs are shared

    def compiled(self, hint: str):
        """The file compiled with ``hint``, compiled now on first use."""
        if hint not in self._compiled:
            self._compiled[hint] = compile_file(self.path, self.precision, hint)
        return self._compiled[hint]

    @property
    def streams(self) -> int:
        """Infer requests a batch is split across (OpenVINO's optimal number in throughput mode)."""
        return int(self.compiled(THROUGHPUT).get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = numpy_batch(x, "openvino")
        with self._lock:
            if len(images) <= 1:
                return torch.from_numpy(self._latency_request().infer({0: images}, share_inputs=True)[0].copy())
            return torch.from_numpy(self._run_split(images))

    def _latency_request(self):
        if "request" not in self._compiled:
            self._compiled["request"] = self.compiled(LATENCY).create_infer_request()
        return self._compiled["request"]

    def _run_split(self, images: np.ndarray) -> np.ndarray:
        """One chunk of ``images`` per infer request, run at once on the streams; outputs in order."""
        import openvino

        if "queue" not in self._compiled:
            queue = openvino.AsyncInferQueue(self.compiled(THROUGHPUT), self.streams)
            queue.set_callback(lambda request, slot: slot.__setitem__(0, request.get_output_tensor(0).data.copy()))
            self._compiled["queue"] = queue
        queue = self._compiled["queue"]
        chunks = np.array_split(images, min(len(images), len(queue)))
        outputs = [[None] for _ in chunks]
        for chunk, slot in zip(chunks, outputs):
            queue.start_async({0: chunk}, userdata=slot, share_inputs=True)
        queue.wait_all()
        return np.concatenate([slot[0] for slot in outputs])

    def extra_repr(self) -> str:
        return f"precision={self.precision}, backend=openvino, file={self.path}"


class DirectBenchmark:
    """OpenVINO used on a file the way its ``benchmark_app`` measures, to show the package's overhead.

    ``compile_model`` with the THROUGHPUT hint (LATENCY for a batch of one), the same precision hint as
    :class:`OVModel`, an ``AsyncInferQueue`` of ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` requests that each
    get the whole ``batch``, kept full for ``waves`` rounds per call; latencies are the requests' own.
    """

    def __init__(self, path: Path, precision: str, batch: torch.Tensor, waves: int = 2) -> None:
        import openvino

        self.name = f"OpenVINO direct {precision}"
        compiled = compile_file(path, precision, LATENCY if len(batch) == 1 else THROUGHPUT)
        self.requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.queue = openvino.AsyncInferQueue(compiled, self.requests)
        self.latencies_ms: list[float] = []
        self.queue.set_callback(lambda request, _: self.latencies_ms.append(request.latency))
        self.input = batch.detach().to(torch.float32).contiguous().numpy()
        self.requests_per_call = self.requests * waves
        self.images_per_call = len(batch) * self.requests_per_call

    def __call__(self) -> None:
        for _ in range(self.requests_per_call):
            self.queue.start_async({0: self.input}, share_inputs=True)
        self.queue.wait_all()

    def describe(self) -> str:
        return f"{self.requests} requests x batch {len(self.input)}, {self.requests_per_call} per call"


def direct_benchmark(model: OVModel, batch: torch.Tensor) -> DirectBenchmark:
    """``resnets bench``'s reference for ``model``: OpenVINO run directly on the same file and ``batch``."""
    return DirectBenchmark(model.path, model.precision, batch)


def build(model: nn.Module, precision: str, example: torch.Tensor,
          calibration: Iterable[torch.Tensor] | None = None, calibrate_on_example: bool = True) -> OVModel:
    """``optimize(model, precision, backend="openvino")``: an :class:`OVModel` of the folded ``model``.

    The conversion and int8 quantization are reused from the cache when the same weights (and, for
    int8, the same calibration images) were prepared before.
    """
    _require(precision)
    if PRECISION_HINTS[precision] == "bf16" and "BF16" not in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise BadInput("the openvino backend runs bf16 only on CPUs with native bf16 (AVX512-BF16 or AMX); "
                         "this one has none (use fp32 or int8, or backend='torch')")
    net = prepare(model, "fp32", example)
    folder = _model_dir(model_key(net, tuple(example.shape[1:])))
    path = fp32 = _convert(net, tuple(example.shape[1:]), folder / "model.xml")
    if PRECISIONS[precision].needs_calibration:
        batches = list(int8_calibration(calibration, example, calibrate_on_example))
        if not batches:
            raise BadInput("int8 calibration got no batches")
        path = _quantize(fp32, batches, folder)
    return OVModel(path, precision)


def describe() -> dict[str, str]:
    """The engine's versions (for benchmark reports)."""
    _require("fp32")
    return {k: v for k, v in _versions().items() if k == "openvino"}
