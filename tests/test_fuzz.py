"""Fuzz the readers of untrusted files: a few hundred seeded mutations of real small JPEG, PNG, ``.pth``,
``.safetensors`` and Keras ``.h5`` files, plus pickles that would run code.

Every case runs in a worker process under a time limit, so a hang or a crash of a C decoder is caught and
named instead of stopping the suite. A reader may load a case or refuse it with the package's own errors
(:class:`ImageLoadError` for images; ``ValueError`` or ``FileNotFoundError`` for weights) naming the file;
any other exception leaking out, a hang, a crash, or code run from a file fails the test.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import select
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnets
from resnets.weights import get_weights, save_safetensors

h5py = pytest.importorskip("h5py")
safetensors_torch = pytest.importorskip("safetensors.torch")

SEED = 1234  # every case follows from it; a failure names its seed file and mutations
CASE_LIMIT_S = 10.0  # per case; the slowest legitimate case takes well under a second
WORKER_START_S = 120.0

WORKER = textwrap.dedent("""
    import json, resource, sys, traceback
    import resnets
    from resnets.data.images import ImageLoadError, load_img
    from resnets.weights import read_checkpoint

    # A reader that believes a mutated header and allocates terabytes fails here, not on the machine.
    resource.setrlimit(resource.RLIMIT_DATA, (4 << 30, 4 << 30))
    print("ready", flush=True)
    for line in sys.stdin:
        kind, path = json.loads(line)
        stage = "read"
        try:
            if kind == "image":
                load_img(path, target_size=(24, 24))
            else:
                read_checkpoint(path)
                stage = "build"
                resnets.create_model("resnet20", weights=path, progress=False)
            out = {"result": "ok"}
        except BaseException as e:
            allowed = ImageLoadError if kind == "image" else (ValueError, FileNotFoundError)
            out = {"result": "refused" if isinstance(e, allowed) else "leaked", "stage": stage,
                   "type": f"{type(e).__module__}.{type(e).__qualname__}", "message": str(e)[:400],
                   "traceback": traceback.format_exc()[-2000:]}
        print(json.dumps(out), flush=True)
""")


class Evil:
    """Unpickling this runs ``exec``: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


@dataclass(frozen=True)
class Case:
    kind: str  # "image" or "weights"
    path: Path
    how: str  # seed and mutations, to reproduce a failure


# --- seeds: small valid files -------------------------------------------------------------------


def _image(rng: np.random.Generator, mode: str, size: tuple[int, int]) -> Image.Image:
    h, w = size
    gradient = np.linspace(0, 255, w, dtype=np.float64)[None, :, None] * np.ones((h, 1, 4))
    noise = rng.integers(0, 64, (h, w, 4))
    return Image.fromarray(np.clip(gradient + noise, 0, 255).astype(np.uint8), "RGBA").convert(mode)


def image_seeds(rng: np.random.Generator) -> dict[str, bytes]:
    jpeg, progressive, png, palette = io.BytesIO(), io.BytesIO(), io.BytesIO(), io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: load_img rotates, so the EXIF parser is fuzzed too
    _image(rng, "RGB", (40, 48)).save(jpeg, "JPEG", quality=90, exif=exif)
    _image(rng, "RGB", (32, 32)).save(progressive, "JPEG", quality=80, progressive=True)
    _image(rng, "RGBA", (32, 40)).save(png, "PNG")
    _image(rng, "RGB", (24, 24)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(
        palette, "PNG", transparency=0)
    return {"exif.jpg": jpeg.getvalue(), "progressive.jpg": progressive.getvalue(), "rgba.png": png.getvalue(),
            "palette.png": palette.getvalue()}


def keras_h5(path: Path, keras3: bool) -> bytes:
    """A small Keras weights file (stem and classifier of a ResNet50), legacy or Keras 3 layout."""
    layers = {
        "conv1_conv": [np.ones((7, 7, 3, 4), "f4"), np.zeros(4, "f4")],
        "conv1_bn": [np.ones(4, "f4"), np.zeros(4, "f4"), np.zeros(4, "f4"), np.ones(4, "f4")],
        "predictions": [np.ones((4, 10), "f4"), np.zeros(10, "f4")],
    }
    with h5py.File(path, "w") as f:
        if keras3:
            for i, (name, weights) in enumerate(layers.items()):
                group = f.create_group(f"layers/layer_{i}/vars")
                group.attrs["name"] = name
                for j, w in enumerate(weights):
                    group[str(j)] = w
        else:
            f.attrs["layer_names"] = [n.encode() for n in layers]
            for name, weights in layers.items():
                group = f.create_group(name)
                names = [f"{name}/w{j}:0" for j in range(len(weights))]
                group.attrs["weight_names"] = [n.encode() for n in names]
                for n, w in zip(names, weights):
                    group[n] = w
    return path.read_bytes()


def weights_seeds(tmp: Path) -> dict[str, bytes]:
    state = resnets.create_model("resnet20").state_dict()
    torch.save(state, tmp / "zip.pth")
    torch.save(state, tmp / "legacy.pth", _use_new_zipfile_serialization=False)
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "plain.safetensors"))
    save_safetensors(state, tmp / "entry.safetensors", get_weights("resnet20.cifar10"))  # with package metadata
    keras_h5(tmp / "legacy.h5", keras3=False)
    keras_h5(tmp / "keras3.h5", keras3=True)
    names = ["zip.pth", "legacy.pth", "plain.safetensors", "entry.safetensors", "legacy.h5", "keras3.h5"]
    return {name: (tmp / name).read_bytes() for name in names}


# --- mutations ------------------------------------------------------------------------------------


def hot_regions(name: str, data: bytes) -> list[tuple[int, int]]:
    """Where a mutation most likely reaches a parser rather than tensor data: headers, pickles, directories."""
    if name.endswith(".safetensors"):
        return [(0, 8 + int.from_bytes(data[:8], "little"))]
    if name.endswith(".pth"):
        return [(0, min(len(data), 16384)), (max(0, len(data) - 8192), len(data))]
    return [(0, len(data))]


def fix_png_crcs(data: bytearray) -> None:
    """Recompute chunk CRCs, so a mutation reaches the decoder instead of stopping at the checksum."""
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos: pos + 4], "big")
        end = pos + 8 + length
        if end + 4 > len(data):
            return
        data[end: end + 4] = struct.pack(">I", zlib.crc32(data[pos + 4: end]))
        pos = end + 4


def mutate(name: str, data: bytes, rng: random.Random) -> tuple[bytes, str]:
    buf, hot, done = bytearray(data), hot_regions(name, data), []

    def position() -> int:
        lo, hi = rng.choice(hot) if rng.random() < 0.8 else (0, len(buf))
        lo, hi = min(lo, len(buf) - 1), min(hi, len(buf))  # the file may have shrunk
        return rng.randrange(lo, max(lo + 1, hi))

    for _ in range(rng.randint(1, 4)):
        op = rng.choice(["flip", "byte", "truncate", "splice", "insert", "delete", "number"])
        if len(buf) < 2:
            break
        pos = position()
        if op == "flip":
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == "byte":
            buf[pos] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op == "truncate":
            del buf[pos:]
        elif op == "splice":  # copy a run of the file over another place
            src, n = position(), rng.randint(1, 64)
            buf[pos: pos + n] = buf[src: src + n]
        elif op == "insert":
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == "delete":
            del buf[pos: pos + rng.randint(1, 64)]
        elif op == "number":  # a length, offset or shape in a header, made huge, negative or zero
            digits = pos
            while digits < len(buf) and not chr(buf[digits]).isdigit():
                digits += 1
            end = digits
            while end < len(buf) and chr(buf[end]).isdigit():
                end += 1
            if digits < len(buf):
                buf[digits:end] = str(rng.choice([0, 1, -1, 2**31, 2**63, 10**30, rng.randrange(10**6)])).encode()
        done.append(f"{op}@{pos}")
    if name.endswith(".png") and rng.random() < 0.7:
        fix_png_crcs(buf)
        done.append("crc")
    return bytes(buf), ",".join(done)


ODD_VALUES = (None, True, -1, 0, 1e308, "", "x" * 300, [], {}, [1, "a"], {"a": None})


def metadata_variants(tmp: Path, rng: random.Random, n: int) -> list[tuple[bytes, str]]:
    """The package's own metadata in a valid safetensors file, with fields dropped, retyped or garbled:
    byte flips in the whole file rarely leave its JSON header valid, so they never reach this parser."""
    from safetensors import safe_open

    seed = tmp / "entry.safetensors"
    with safe_open(str(seed), framework="pt") as f:
        (key, text), = f.metadata().items()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    variants = []
    for i in range(n):
        entry, done = json.loads(text), []
        for _ in range(rng.randint(1, 3)):
            parent, k = None, None
            node = entry
            while isinstance(node, (dict, list)) and node and (parent is None or rng.random() < 0.5):
                parent, k = node, rng.choice(list(node) if isinstance(node, dict) else range(len(node)))
                node = parent[k]
            if parent is None:
                continue
            if isinstance(parent, dict) and rng.random() < 0.3:
                del parent[k]
                done.append(f"drop {k}")
            else:
                parent[k] = rng.choice(ODD_VALUES)
                done.append(f"retype {k}={parent[k]!r:.20}")
        garbled = json.dumps(entry)
        if rng.random() < 0.2:
            garbled = mutate("meta.json", garbled.encode(), rng)[0].decode("utf-8", "replace")
            done.append("garbled")
        safetensors_torch.save_file(tensors, str(tmp / "meta.safetensors"), metadata={key: garbled})
        variants.append(((tmp / "meta.safetensors").read_bytes(), ",".join(done)))
    return variants


def evil_files(tmp: Path, marker: Path) -> dict[str, bytes]:
    """Files that run code if unpickled: in torch.save's zip, as a legacy pickle, inside a state dict,
    and under the names of the other formats."""
    state = {"conv1.weight": torch.zeros(16, 3, 3, 3), "payload": Evil(marker)}
    torch.save(state, tmp / "evil_zip.pth")
    torch.save(Evil(marker), tmp / "evil_legacy.pth", _use_new_zipfile_serialization=False)
    raw = pickle.dumps(state, protocol=2)
    made = {name: (tmp / name).read_bytes() for name in ("evil_zip.pth", "evil_legacy.pth")}
    return made | {"evil_raw.pth": raw, "evil_raw.safetensors": raw, "evil_raw.h5": raw, "evil_raw.bin": raw}


def make_cases(tmp: Path, marker: Path) -> list[Case]:
    rng, np_rng = random.Random(SEED), np.random.default_rng(SEED)
    seeds_dir, cases_dir = tmp / "seeds", tmp / "cases"
    seeds_dir.mkdir()
    cases_dir.mkdir()
    plan = [("image", image_seeds(np_rng), 40), ("weights", weights_seeds(seeds_dir), 30),
            ("weights", evil_files(seeds_dir, marker), 4)]
    cases = []
    for kind, seeds, mutations in plan:
        for name, data in seeds.items():
            variants = [(data, "as made")] + [mutate(name, data, rng) for _ in range(mutations)]
            if name == "entry.safetensors":
                variants += metadata_variants(seeds_dir, rng, 40)
            for i, (content, how) in enumerate(variants):
                path = cases_dir / f"{i:03d}-{name}"
                path.write_bytes(content)
                cases.append(Case(kind, path, f"{name} {how}"))
    return cases


# --- running ----------------------------------------------------------------------------------------


class Worker:
    """A Python process that runs the readers on one case at a time, killed and replaced if it hangs."""

    def __init__(self, log: Path) -> None:
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        if self._read_line(WORKER_START_S) != "ready":
            raise RuntimeError(f"the fuzz worker did not start; see {log}")

    def _read_line(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if ready else None

    def run(self, case: Case) -> dict:
        self.proc.stdin.write(json.dumps([case.kind, str(case.path)]) + "\n")
        self.proc.stdin.flush()
        line = self._read_line(CASE_LIMIT_S)
        if line is None:
            self.close()
            return {"result": "hung", "message": f"no answer in {CASE_LIMIT_S:g} s"}
        if not line:
            code = self.proc.wait()
            self.close()
            return {"result": "crashed", "message": f"worker exited with {code}"}
        return json.loads(line)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


@pytest.mark.slow
def test_readers_survive_mutated_files(tmp_path):
    marker = tmp_path / "code-ran"
    # The payload is real: plain unpickling runs it (then the marker is removed for the fuzz run).
    pickle.loads(pickle.dumps(Evil(marker)))
    assert marker.read_text() == "code ran"
    marker.unlink()

    start = time.monotonic()
    cases = make_cases(tmp_path, marker)
    assert len(cases) > 300
    log = tmp_path / "worker.log"
    worker, results = Worker(log), []
    try:
        for case in cases:
            out = worker.run(case)
            results.append((case, out))
            if out["result"] in ("hung", "crashed"):
                worker = Worker(log)
    finally:
        worker.close()
    elapsed = time.monotonic() - start

    assert not marker.exists(), "a weights reader ran code from a file"
    bad = [f"{c.how} ({c.path.name}): {o['result']} {o.get('type', '')}: {o['message']}\n{o.get('traceback', '')}"
           for c, o in results if o["result"] not in ("ok", "refused")]
    assert not bad, f"{len(bad)} of {len(cases)} cases failed:\n" + "\n".join(bad[:10])
    # The readers' refusals name the file, so that a user with many files knows which one is bad.
    unnamed = [f"{c.how}: {o['type']}: {o['message']}" for c, o in results
               if o["result"] == "refused" and o["stage"] == "read" and c.path.name not in o["message"]]
    assert not unnamed, "refusals that do not name the file:\n" + "\n".join(unnamed[:10])
    counts = {r: sum(o["result"] == r for _, o in results) for r in ("ok", "refused")}
    assert counts["refused"] > 100  # the mutations do reach the parsers
    for name in ("exif.jpg", "rgba.png", "zip.pth", "legacy.pth", "plain.safetensors", "entry.safetensors"):
        seed = next(o for c, o in results if c.how == f"{name} as made")
        assert seed["result"] == "ok", (name, seed)  # the seeds themselves are valid
    for c, o in results:
        if c.how.startswith("evil_") and c.how.endswith("as made"):
            assert o["result"] == "refused", (c.how, o)
    assert elapsed < 60, f"fuzzing took {elapsed:.0f} s"
