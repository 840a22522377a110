"""One prepared GPU session: CUDA inference accuracy and speed, mixed-precision training, a real checkpoint.

Written on a machine without a GPU, for a later session that has one (about 5 minutes on an H100).
From the project root:

    python benchmarks/gpu_check.py                  # JSON to $OUT/gpu_check.json, or --out FILE

The same script runs on the CPU with tiny sizes, so it cannot rot unnoticed (tests/test_device.py):

    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu_check.json

Parts, each in its own try/except so that one failure does not hide the others (``--parts`` picks):

a. ``optimize()`` fp32/fp16/bf16 on resnet50 (random weights, randomised BatchNorm statistics): max
   relative logit difference and top-1 agreement against eager fp32 on the same device, at two batch
   sizes, the first (compiling) call's time, and whether an earlier output survived a later call.
b. ``resnets bench --batch 1,64,256 --precision fp32,fp16,bf16`` against torchvision eager fp32.
c. 200 training steps of resnet20 with ``--precision bf16`` and ``fp16`` (grad scaler) on the shared
   CIFAR-10 JPEGs (a synthetic image folder without them): images/s and whether the loss fell.
d. ``resnets eval`` of the real resnet20 checkpoint on the CIFAR-10 JPEG test set (expected 81.03%).
e. CUDA graphs on against off (fp16, batch 1 and 256): the measurement behind optimize()'s default.
f. ImageNet-scale training (``--parts f`` alone: about 5 minutes, under 8, on one H100): ResNet-50 training images/s
   at batch 256, fp16 autocast (NVIDIA's "mixed precision") and TF32, from synthetic tensors and from JPEG files
   decoded on the GPU (``resnets.data.decode.decode_jpeg_batch``) with the tv-v2 recipe's augmentation (torchvision v2
   RandomResizedCrop 176, flip, TrivialAugmentWide per image on the GPU; normalise, RandomErasing 0.1, MixUp 0.2 /
   CutMix 1.0 per batch), against NVIDIA DeepLearningExamples' published ResNet-50 v1.5 training throughput; then
   ``resnets train --recipe tv-v2`` for 300 steps on a synthetic 10-class JPEG folder, to see the loss fall.
   Not part of the default parts (with them the run would pass 8 minutes); on the CPU it is skipped.

The JSON is rewritten after every part, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' BatchNorm randomiser, one copy for both
try:
    import resnets
except ImportError:  # a bare checkout: run from the source tree
    sys.path.insert(0, str(ROOT / "src"))
    import resnets
from bn_reference import randomize_bn

from resnets.atomic import atomic_path
from resnets.device import resolve_device
from resnets.inference import optimize
from resnets.inference.bench import compare, machine

EXPECTED_TOP1 = 81.03  # resnet20-12fca82f.th on test.tar, measured with its publisher's code (shared/README.md)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Sizes:
    """How big each part is: the full GPU run, or --quick for a CPU smoke test."""

    model: str
    input_size: int
    check_batches: tuple[int, ...]
    compile: bool
    bench_batches: str
    bench_extra: tuple[str, ...]
    train_steps: int
    train_batch: int
    train_on_cifar: bool  # False: a synthetic image folder, quick to decode
    eval_per_class: int | None  # None: the whole test.tar
    graph_batches: tuple[int, ...]


FULL = Sizes("resnet50", 224, (1, 64), True, "1,64,256", (), 200, 128, True, None, (1, 256))
QUICK = Sizes("resnet18", 32, (1, 4), False, "1,2", ("--runs", "2", "--warmup", "1", "--no-compile"), 4, 8, False, 10,
              (1, 2))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    torch._dynamo.reset()  # each part starts below dynamo's per-function recompile limit
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _precisions(device: torch.device) -> list[str]:
    return ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]


def _cli(args: list[str], timeout: float, capture: bool = False) -> subprocess.CompletedProcess:
    """``python -m resnets ARGS`` in a fresh process (its own dynamo caches), the source tree importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    print("$ resnets " + " ".join(args), flush=True)
    return subprocess.run([sys.executable, "-m", "resnets", *args], env=env, timeout=timeout, check=True,
                          text=True, stdout=subprocess.PIPE if capture else None)


def part_accuracy(device: torch.device, sizes: Sizes, work: Path) -> dict:
    """(a) optimize() against eager fp32 on the same device."""
    model = randomize_bn(resnets.create_model(sizes.model)).to(device)
    gen = torch.Generator().manual_seed(1)
    side = sizes.input_size
    inputs = [torch.randn(b, 3, side, side, generator=gen).to(device) for b in sizes.check_batches]
    with torch.inference_mode():
        references = [model(x).float() for x in inputs]
    out: dict = {"model": sizes.model, "input_size": side}
    for precision in ("fp32", "fp16", "bf16"):
        _free(device)
        try:
            fast = optimize(model, precision, compile=sizes.compile)
        except ValueError as e:  # fp16 on the CPU
            out[precision] = {"refused": str(e)}
            continue
        row: dict = {"compiled": fast.compiled, "cuda_graphs": fast.cuda_graphs, "batches": {}}
        first_output = None
        for x, ref in zip(inputs, references):
            start = time.perf_counter()
            y = fast(x)
            _sync(device)
            first_call = time.perf_counter() - start
            for _ in range(2):  # CUDA graph trees run, record, then replay: the third call is the steady state
                y = fast(x)
            if first_output is None:
                first_output = (y, y.clone())
            row["batches"][str(len(x))] = {
                "max_rel_diff": ((y - ref).abs().max() / ref.abs().max()).item(),
                "top1_agreement": (y.argmax(1) == ref.argmax(1)).float().mean().item(),
                "first_call_s": round(first_call, 2),
            }
        # A CUDA graph's replay rewrites its output buffers: the first batch's result must be a copy.
        row["earlier_output_intact"] = torch.equal(*first_output)
        out[precision] = row
        print(f"  {precision}: {row}", flush=True)
        del fast
    return out


def part_bench(device: torch.device, sizes: Sizes, work: Path) -> dict:
    """(b) ``resnets bench`` on the device, torchvision eager fp32 as the baseline."""
    saved = work / "bench.json"
    _cli(["bench", "--device", str(device), "--model", sizes.model, "--weights", "none", "--batch", sizes.bench_batches,
          "--precision", ",".join(_precisions(device)), "--input-size", str(sizes.input_size),
          "--save", str(saved), *sizes.bench_extra], timeout=300)
    return json.loads(saved.read_text())


def synthetic_folder(root: Path, train: int, test: int) -> Path:
    """Two learnable classes of 32x32 PNGs (reddish against bluish noise) in train/ and test/."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for i in range(count):
            label = i % 2
            pixels = rng.integers(0, 160, (32, 32, 3))
            pixels[..., 0 if label == 0 else 2] += 95
            folder = root / split / ("red" if label == 0 else "blue")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:05d}.png")
    return root


def part_train(device: torch.device, sizes: Sizes, work: Path, shared: Path | None) -> dict:
    """(c) mixed-precision training steps of resnet20: two epochs, so that the loss can be seen to fall."""
    subset = sizes.train_steps // 2 * sizes.train_batch  # two epochs
    cifar = shared / "data" / "cifar10-jpeg" if shared else None
    if sizes.train_on_cifar and cifar is not None and cifar.is_dir():
        data, extra = cifar, []
    else:  # a gentler learning rate than the CIFAR recipe's for these few, tiny batches
        data, extra = synthetic_folder(work / "synthetic", subset, 4 * sizes.train_batch), ["--lr", "0.02"]
    out: dict = {"data": str(data), "steps": sizes.train_steps, "batch_size": sizes.train_batch}
    if device.type != "cuda":  # measured here: 3 img/s against bf16's 850, CPU fp16 convolutions are emulated
        out["fp16"] = {"skipped": "fp16 training is for CUDA GPUs"}
    for precision in ("bf16", "fp16") if device.type == "cuda" else ("bf16",):
        run_dir = work / f"train-{precision}"
        start = time.perf_counter()
        _cli(["train", "--model", "resnet20", "--data", str(data), "--device", str(device), "--precision", precision,
              "--max-steps", str(sizes.train_steps), "--batch-size", str(sizes.train_batch),
              "--train-subset", str(subset), "--test-subset", str(4 * sizes.train_batch),
              "--out", str(run_dir), "--no-progress", *extra], timeout=300)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        out[precision] = {
            "epochs": len(rows), "train_loss": [round(r["train_loss"], 4) for r in rows],
            "loss_fell": rows[-1]["train_loss"] < rows[0]["train_loss"],
            "images_per_s_last_epoch": rows[-1]["images_per_s"], "eval_error": round(rows[-1]["eval_error"], 4),
            "wall_s": round(time.perf_counter() - start, 1),
        }
        print(f"  {precision}: {out[precision]}", flush=True)
    return out


def _test_subset(test_tar: Path, per_class: int, root: Path) -> Path:
    """The first ``per_class`` images of every class of ``test_tar``, as a folder."""
    taken: dict[str, int] = {}
    with tarfile.open(test_tar) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or taken.get(parts[1], 0) >= per_class:
                continue
            taken[parts[1]] = taken.get(parts[1], 0) + 1
            dest = root / "test" / parts[1] / parts[2]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tar.extractfile(member).read())
    return root


def part_eval(device: torch.device, sizes: Sizes, work: Path, shared: Path | None) -> dict:
    """(d) the real resnet20 checkpoint's top-1 on the CIFAR-10 JPEG test set, on the device."""
    test_tar = shared / "data" / "cifar10-jpeg" / "test.tar" if shared else None
    checkpoint = shared / "weights" / "cifar10" / "resnet20-12fca82f.th" if shared else None
    if test_tar is None or not test_tar.is_file() or not checkpoint.is_file():
        return {"skipped": f"no shared CIFAR-10 test.tar and resnet20 checkpoint (looked in {shared})"}
    data = test_tar if sizes.eval_per_class is None else _test_subset(test_tar, sizes.eval_per_class, work / "eval")
    done = _cli(["eval", str(data), "--model", "resnet20", "--weights", str(checkpoint), "--device", str(device),
                 "--batch-size", "500", "--json"], timeout=300, capture=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    out = {"data": str(data), "top1": result["top1"], "top5": result["top5"], "images": result["images"]}
    if sizes.eval_per_class is None:
        out |= {"expected_top1": EXPECTED_TOP1, "diff_points": round(result["top1"] - EXPECTED_TOP1, 2)}
    print(f"  {out}", flush=True)
    return out


def part_graphs(device: torch.device, sizes: Sizes, work: Path) -> dict:
    """(e) compiled fp16 with and without CUDA graphs, interleaved, per batch size."""
    if device.type != "cuda":
        return {"skipped": "CUDA graphs need a CUDA device"}
    model = resnets.create_model(sizes.model).eval().to(device)
    models = {"fp16 no graphs": optimize(model, "fp16", cuda_graphs=False), "fp16 cuda graphs": optimize(model, "fp16")}
    gen = torch.Generator().manual_seed(2)
    results = []
    for b in sizes.graph_batches:
        x = torch.randn(b, 3, sizes.input_size, sizes.input_size, generator=gen).to(device)
        results += compare(models, x, "fp16 no graphs", runs=30 if b == 1 else 10)
    for r in results:
        print(f"  {r.mode} batch {r.batch}: {r.images_per_s:.0f} img/s, {r.latency_ms_median:.2f} ms, "
              f"x{r.ratio:.2f}", flush=True)
    return {"results": [asdict(r) for r in results]}


# NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md (commit 291f0d0), "Training
# performance: NVIDIA DGX A100 (8x A100 80GB)", 1 GPU, pytorch-21.03 NGC container, DALI input: images/s. The same
# README publishes V100 figures (FP32 367, mixed 1200) and none for the H100: on an H100 the A100 row is the nearest
# published reference, and the report says so. ResNet-50 v1.5 is torchvision's (and resnets') resnet50 layout.
DLE_RN50_TRAIN = {"A100": {"fp16": 2470, "tf32": 938}, "V100": {"fp16": 1200, "fp32": 367}}
DLE_SOURCE = ("https://github.com/NVIDIA/DeepLearningExamples/blob/master/PyTorch/Classification/ConvNets/"
              "resnet50v1.5/README.md#training-performance-results")


def _published(device: torch.device) -> tuple[str, dict]:
    """DeepLearningExamples' published figures for this GPU, or the A100's with a note saying it is another GPU."""
    name = torch.cuda.get_device_name(device)
    for gpu, figures in DLE_RN50_TRAIN.items():
        if gpu in name:
            return f"{gpu} (this GPU's kind)", figures
    return f"A100 (no published figure for {name}; the A100's is the nearest)", DLE_RN50_TRAIN["A100"]


def _tv2_augment(num_classes: int) -> tuple[Callable, Callable]:
    """tv-v2's augmentation as torchvision's reference composes it, on GPU tensors: per image, and per batch."""
    from torchvision.transforms import v2

    per_image = v2.Compose([v2.RandomResizedCrop(176, antialias=True), v2.RandomHorizontalFlip(),
                            v2.TrivialAugmentWide(interpolation=v2.InterpolationMode.BILINEAR)])
    erase = v2.RandomErasing(p=0.1)
    mixing = v2.RandomChoice([v2.MixUp(alpha=0.2, num_classes=num_classes),
                              v2.CutMix(alpha=1.0, num_classes=num_classes)])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def batch(images: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([per_image(img) for img in images]).float().div_(255)
        x = (x - mean.to(x.device)) / std.to(x.device)
        x = torch.stack([erase(img) for img in x])
        return mixing(x, labels)

    return per_image, batch


def _jpeg_bytes(shared: Path | None, count: int, work: Path) -> list[bytes]:
    """``count`` ImageNet-sized JPEG files' bytes: the shared ImageNet photos, cycled, else synthetic 500x375 ones."""
    photos = sorted((shared / "data" / "imagenet-samples").glob("*.JPEG")) if shared else []
    if not photos:
        rng = np.random.default_rng(0)
        work.mkdir(parents=True, exist_ok=True)
        for i in range(16):
            path = work / f"{i}.JPEG"
            small = rng.integers(0, 255, (24, 32, 3)).astype(np.uint8)  # smooth content: a photo's entropy, roughly
            Image.fromarray(small).resize((500, 375), Image.BILINEAR).save(path, quality=90)
            photos.append(path)
    data = [p.read_bytes() for p in photos]
    return [data[i % len(data)] for i in range(count)]


def part_imagenet_train(device: torch.device, sizes: Sizes, work: Path, shared: Path | None) -> dict:
    """(f) ResNet-50 training images/s (synthetic, and JPEGs decoded on the GPU with tv-v2's augmentation) against
    DeepLearningExamples' figures; then the tv-v2 recipe for 300 steps to see the loss fall."""
    if device.type != "cuda":
        return {"skipped": "ImageNet-scale training throughput is measured on a CUDA GPU (GPU JPEG decoding)"}
    from resnets.data.decode import decode_jpeg_batch

    batch, warmup, timed = 256, 5, 30
    gpu, published = _published(device)
    out: dict = {"batch": batch, "timed_steps": timed, "published_gpu": gpu, "published_images_per_s": published,
                 "published_source": DLE_SOURCE}
    model = resnets.create_model("resnet50").to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-5)
    files = _jpeg_bytes(shared, batch, work / "jpeg")
    labels = torch.randint(0, 1000, (batch,), device=device)
    _, tv2_batch = _tv2_augment(1000)

    def step(x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None, scaler: torch.amp.GradScaler) -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    synthetic = torch.randn(batch, 3, 224, 224, device=device)
    for precision, dtype in (("fp16", torch.float16), ("tf32", None)):
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True
        scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
        sources = {"synthetic": lambda: (synthetic, labels),
                   "jpeg_gpu_decode_tv2_aug": lambda: tv2_batch(decode_jpeg_batch(files, device), labels)}
        for source, make in sources.items():
            for _ in range(warmup):
                step(*make(), dtype, scaler)
            _sync(device)
            start = time.perf_counter()
            for _ in range(timed):
                step(*make(), dtype, scaler)
            _sync(device)
            rate = round(batch * timed / (time.perf_counter() - start), 1)
            out[f"{source}_{precision}_images_per_s"] = rate
            if precision in published:
                out[f"{source}_{precision}_vs_published"] = round(rate / published[precision], 3)
            print(f"  {source} {precision}: {rate} img/s ({gpu}: {published.get(precision)})", flush=True)
    _free(device)
    # The recipe end to end: 300 steps of batch 128 (lr 0.5 x 128 / 1024, linear as torchvision scales it).
    data = work / "tv2-data"
    rng = np.random.default_rng(1)
    for split, count in (("train", 1280), ("val", 100)):
        for i in range(count):
            label = i % 10
            pixels = rng.integers(0, 100, (64, 64, 3)) + np.array([25 * label, 120, 230 - 25 * label])
            folder = data / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    run_dir = work / "tv2-run"
    start = time.perf_counter()
    _cli(["train", "--model", "resnet50", "--recipe", "tv-v2", "--data", str(data), "--device", str(device),
          "--batch-size", "128", "--epochs", "30", "--lr-warmup-epochs", "1", "--precision", "bf16",
          "--image-size", "128", "--train-crop-size", "112", "--val-resize-size", "128", "--val-crop-size", "112",
          "--out", str(run_dir), "--no-progress"], timeout=360)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    out["tv2_recipe"] = {"steps": rows[-1]["step"], "train_loss": [round(r["train_loss"], 3) for r in rows],
                         "loss_fell": rows[-1]["train_loss"] < rows[0]["train_loss"],
                         "eval_error": round(rows[-1]["eval_error"], 4), "wall_s": round(time.perf_counter() - start, 1)}
    print(f"  tv-v2 recipe: {out['tv2_recipe']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no compilation: a smoke test for CPUs")
    parser.add_argument("--parts", default="abcde",
                        help="which parts to run: any of abcdef (default: abcde; f alone, under 8 minutes)")
    parser.add_argument("--out", default=None, help="JSON file (default: $OUT/gpu_check.json)")
    parser.add_argument("--shared", default=None, help="the shared data folder (default: ../shared or ./shared)")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as e:  # no GPU here: say what to run instead, no traceback
        parser.error(f"{e} (with --quick for the small CPU smoke test; the full check is for GPUs)")
    if args.out is None and not os.environ.get("OUT"):
        parser.error("give --out FILE, or set $OUT")
    out_file = Path(args.out or Path(os.environ["OUT"]) / "gpu_check.json")
    shared = Path(args.shared) if args.shared else next(
        (p for p in (ROOT.parent / "shared", ROOT / "shared") if p.is_dir()), None)
    sizes = QUICK if args.quick else FULL
    report: dict = {"device": str(device), "quick": args.quick, "machine": machine(device),
                    "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                    "matmul_precision": torch.get_float32_matmul_precision(), "parts": {}}
    parts: dict[str, tuple[str, Callable[[Path], dict]]] = {
        "a": ("accuracy", lambda w: part_accuracy(device, sizes, w)),
        "b": ("bench", lambda w: part_bench(device, sizes, w)),
        "c": ("train", lambda w: part_train(device, sizes, w, shared)),
        "d": ("eval", lambda w: part_eval(device, sizes, w, shared)),
        "e": ("cuda_graphs", lambda w: part_graphs(device, sizes, w)),
        "f": ("imagenet_train", lambda w: part_imagenet_train(device, sizes, w, shared)),
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as tmp:
        for key in args.parts:
            name, run = parts[key]
            print(f"== ({key}) {name}", flush=True)
            start = time.perf_counter()
            try:
                result = {"status": "ok", **run(Path(tmp) / name)}
            except Exception as e:  # noqa: BLE001 - one part's failure must not hide the others
                traceback.print_exc()
                result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            finally:
                _free(device)
            result["seconds"] = round(time.perf_counter() - start, 1)
            report["parts"][name] = result
            report["seconds"] = round(time.perf_counter() - started, 1)
            with atomic_path(out_file) as f:
                f.write_text(json.dumps(report, indent=2) + "\n")
            print(f"== ({key}) {name}: {result['status']} in {result['seconds']} s", flush=True)
    print(f"wrote {out_file} ({report['seconds']} s)")
    return 0 if all(p["status"] == "ok" for p in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
