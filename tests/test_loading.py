"""Loading weights into models: torchvision and CIFAR files by path and by name, mismatches, safety, conversion."""

from __future__ import annotations

import dataclasses
import io
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from bn_reference import randomize_bn
from PIL import Image

import resnets
from resnets.cli import main
from resnets import create_model
from resnets.classes import CIFAR10_CLASSES, imagenet_names
from resnets.weights import (
    ChecksumError,
    convert_to_safetensors,
    get_weights,
    read_checkpoint,
    save_safetensors,
)
from resnets.weights.checkpoint import HDF5_SIGNATURE, detect_format

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CIFAR_FILES = {20: SHARED / "weights/cifar10/resnet20-12fca82f.th", 32: SHARED / "weights/cifar10/resnet32-d509ac18.th"}
CIFAR_TEST_TAR = SHARED / "data/cifar10-jpeg/test.tar"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

needs_cifar = pytest.mark.skipif(not CIFAR_FILES[20].is_file(), reason="shared CIFAR checkpoints not available")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny forward passes: one thread avoids OpenMP spin-waits on a busy 2-core machine (~10x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)




@pytest.fixture(scope="module")
def tv18(tmp_path_factory):
    """A random torchvision ResNet-18 and its state dict saved as .pth."""
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    ref = randomize_bn(tvm.resnet18())
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_file_gives_torchvision_outputs(depth, tmp_path):
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(depth)
    ref = randomize_bn(getattr(tvm, f"resnet{depth}")(), seed=depth)
    path = tmp_path / f"tv{depth}.pth"
    torch.save(ref.state_dict(), path)
    model = create_model(f"resnet{depth}", weights=path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() < 1e-4
    cfg = model.pretrained_cfg
    assert cfg.model == f"resnet{depth}" and cfg.file_format == "torch" and cfg.classes == imagenet_names()
    assert cfg.preprocessing == resnets.preprocess.IMAGENET_TORCH and cfg.source == str(path)


def test_without_top_loads_features_only(tv18):
    ref, path = tv18
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(
            torch.nn.Sequential(*list(ref.children())[:-2])(x), 1), 1)
        model = create_model("resnet18", weights=path, num_classes=0).eval()
        assert not any(k.startswith("fc.") for k in model.state_dict())
        assert model.pretrained_cfg.num_classes == 0 and model.pretrained_cfg.classes == ()  # the head is gone
        assert (model(x) - features).abs().max().item() < 1e-4
        keras_style = resnets.ResNet18(include_top=False, weights=str(path), pooling="avg").eval()
        assert (keras_style(x) - features).abs().max().item() < 1e-4


def test_wrong_depth_names_first_offending_tensor(tv18):
    _, path = tv18
    with pytest.raises(ValueError, match=r"a resnet18 checkpoint\) do not fit resnet34: the model's "
                                         r"layer1\.2\.conv1\.weight \(64, 64, 3, 3\) is missing"):
        create_model("resnet34", weights=path)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight has shape \(64, 64, 3, 3\) in the weights "
                                         r"but \(64, 64, 1, 1\) in the model"):
        create_model("resnet50", weights=path)


def test_other_class_count_gets_a_new_classifier(tv18):
    """Issue 31: this was a shape error; now timm's rule (tests/test_timm_habits.py tries every kind of head)."""
    ref, path = tv18
    with pytest.warns(UserWarning, match="have 1000 classes, the model num_classes=10: their classifier is dropped"):
        model = create_model("resnet18", weights=path, num_classes=10)
    assert model.fc.weight.shape == (10, 512) and torch.equal(model.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    assert model.pretrained_cfg.num_classes == 10 and model.pretrained_cfg.classes == ()


def test_class_count_comes_from_the_file(tmp_path):
    torch.manual_seed(0)
    src = create_model("resnet18", num_classes=7)
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, tmp_path / "seven.pt")
    model = create_model("resnet18", weights=tmp_path / "seven.pt")
    assert model.num_classes == 7 and model.pretrained_cfg.classes == tuple("0123456")
    assert torch.equal(model.fc.weight, src.fc.weight)


class _Evil:
    """Unpickling this would create the marker file: the test proves it never happens."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    state = create_model("resnet20").state_dict()
    torch.save({"state_dict": state, "payload": _Evil(str(marker))}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ValueError, match=r"evil\.pth: refused to load.*run arbitrary code"):
        create_model("resnet20", weights=path)
    with pytest.raises(ValueError, match="refused to load"):
        read_checkpoint(path)
    assert not marker.exists()


def test_safetensors_whose_header_length_starts_with_a_pickle_byte(tmp_path):
    """A safetensors header of 0x..80 bytes begins with 0x80, a pickle's first byte: still safetensors."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    state = create_model("resnet20").state_dict()
    path = tmp_path / "model.safetensors"
    for pad in range(0, 256, 8):
        save_file(state, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["pad"] is not None
    assert detect_format(path) == "safetensors"
    assert create_model("resnet20", weights=path).pretrained_cfg.file_format == "safetensors"


def test_weights_entry_reads_a_safetensors_header_alone(tmp_path, monkeypatch):
    """What a file says of itself needs its header, not its tensors (fine-tuning asks before loading them)."""
    from resnets.weights import checkpoint, loading
    from resnets.weights.entry import WeightsEntry
    from resnets.weights.loading import weights_entry

    path = tmp_path / "mine.safetensors"
    save_safetensors(create_model("resnet20").state_dict(), path,
                     WeightsEntry("mine", "resnet20", None, None, "safetensors", classes="cifar10"))
    plain = tmp_path / "plain.pth"
    torch.save(create_model("resnet20").state_dict(), plain)
    for module in (checkpoint, loading):
        monkeypatch.setattr(module, "read_checkpoint", lambda *a, **k: pytest.fail("read the tensors"))
    assert weights_entry(None, path).model == "resnet20"
    assert weights_entry(None, plain) is None  # records nothing
    with pytest.raises(ValueError, match="empty file"):
        (tmp_path / "empty.safetensors").write_bytes(b"")
        weights_entry(None, tmp_path / "empty.safetensors")


def test_format_detection_and_bad_files(tmp_path, tv18):
    _, path = tv18
    assert detect_format(path) == "torch"
    st = tmp_path / "no_suffix"
    save_safetensors(read_checkpoint(path).state_dict, st)
    assert detect_format(st) == "safetensors"
    assert create_model("resnet18", weights=st).pretrained_cfg.file_format == "safetensors"
    junk = tmp_path / "junk.bin2"
    junk.write_bytes(b"hello, not weights")
    with pytest.raises(ValueError, match=r"junk\.bin2: unrecognised weights format"):
        create_model("resnet18", weights=junk)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"truncated\.pth"):
        create_model("resnet18", weights=truncated)
    with pytest.raises(FileNotFoundError, match="neither a registry name"):
        create_model("resnet18", weights=str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match=r"unknown weights 'resnet18\.imagenet21k'"):
        create_model("resnet18", weights="resnet18.imagenet21k")


def test_keras_h5_is_read_by_the_keras_reader_and_builds_v1(tmp_path, monkeypatch):
    """A Keras file goes to ``keras_h5.read_keras_h5``; its v1 variant and BN epsilon shape the model."""
    keras_h5 = pytest.importorskip("resnets.weights.keras_h5")
    torch.manual_seed(0)
    kwargs = {"stride_in_1x1": True, "bn_eps": 1.001e-5, "conv_bias": False, "num_classes": 1000}
    src = randomize_bn(create_model("resnet50", **kwargs))
    calls = []

    def fake_reader(path, fold_bias=True):
        calls.append((Path(path), fold_bias))
        return keras_h5.KerasCheckpoint(src.state_dict(), 50, True, 1000, dict(kwargs))

    monkeypatch.setattr(keras_h5, "read_keras_h5", fake_reader)
    h5 = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    h5.write_bytes(HDF5_SIGNATURE + bytes(64))
    model = create_model("resnet50", weights=h5).eval()
    assert calls == [(h5, True)]
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)
    assert model.bn1.eps == 1.001e-5
    assert model.pretrained_cfg.preprocessing == resnets.preprocess.IMAGENET_CAFFE
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), src(x), atol=1e-5)
    # Converted to safetensors, the file keeps the variant that its tensors cannot show.
    out, entry = convert_to_safetensors(h5, tmp_path / "k.safetensors")
    assert entry.model_kwargs["stride_in_1x1"] is True
    again = create_model("resnet50", weights=out).eval()
    assert again.layer2[0].conv1.stride == (2, 2) and again.bn1.eps == 1.001e-5
    assert again.pretrained_cfg.preprocessing == resnets.preprocess.IMAGENET_CAFFE
    with torch.no_grad():
        assert torch.allclose(again(x), src(x), atol=1e-5)


def _cifar_sample(per_class: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` CIFAR-10 test JPEGs of each class, normalised with torchvision as the publisher did."""
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    images, labels = [], []
    with tarfile.open(CIFAR_TEST_TAR) as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith(".jpg")), key=lambda m: m.name)
        for label, name in enumerate(CIFAR_CLASSES):
            for m in [m for m in members if m.name.split("/")[-2] == name][:per_class]:
                images.append(tf(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")))
                labels.append(label)
    return torch.stack(images), torch.tensor(labels)


@pytest.fixture(scope="module")
def cifar_sample():
    if not CIFAR_TEST_TAR.is_file():
        pytest.skip("shared CIFAR-10 test images not available")
    return _cifar_sample()


@needs_cifar
@pytest.mark.parametrize("depth", [20, 32])
def test_cifar_checkpoint_by_path_and_by_name(depth, tmp_path, monkeypatch, cifar_sample):
    path = CIFAR_FILES[depth]
    raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    by_path = create_model(f"resnet{depth}", weights=path).eval()
    assert by_path.layer2[0].downsample is not None and not list(by_path.layer2[0].downsample.parameters())
    assert torch.equal(by_path.fc.weight, raw["module.linear.weight"])
    assert torch.equal(by_path.layer3[0].bn2.running_var, raw["module.layer3.0.bn2.running_var"])
    assert by_path.pretrained_cfg.classes == CIFAR10_CLASSES
    assert by_path.pretrained_cfg.preprocessing == resnets.preprocess.CIFAR10

    # By registry name, offline, from a cache filled by hand (the file name's sha256 prefix is checked).
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    shutil.copy(path, tmp_path / path.name)
    by_name = create_model(f"resnet{depth}", weights="cifar10", cache_dir=tmp_path).eval()
    assert by_name.pretrained_cfg is get_weights(f"resnet{depth}.akamaster_cifar10")
    x, y = cifar_sample
    with torch.no_grad():
        logits = by_path(x)
        assert torch.equal(by_name(x[:8]), logits[:8])
    # Published: 81.0/82.6% on all 10,000 of these JPEGs (91.7/92.6% on the original pixels); 100 images here.
    assert (logits.argmax(1) == y).float().mean().item() > 0.65

    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path))
    assert create_model(f"resnet{depth}", weights=f"resnet{depth}.akamaster_cifar10").pretrained_cfg.metrics

    damaged = bytearray(path.read_bytes())
    damaged[-100] ^= 0xFF
    (tmp_path / path.name).write_bytes(bytes(damaged))
    prefix = get_weights(f"resnet{depth}.akamaster_cifar10").sha256
    with pytest.raises(ChecksumError, match=f"sha256 is .*expected {prefix}"):
        create_model(f"resnet{depth}", weights="cifar10", cache_dir=tmp_path)


@needs_cifar
def test_convert_round_trip_keeps_weights_and_description(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    shutil.copy(CIFAR_FILES[20], tmp_path / CIFAR_FILES[20].name)
    out = tmp_path / "out" / "r20.safetensors"
    assert main(["weights", "convert", "resnet20.akamaster_cifar10", str(out), "--cache-dir", str(tmp_path)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["r20.safetensors"]  # no temporary file left
    original = create_model("resnet20", weights=CIFAR_FILES[20]).eval()
    converted = create_model("resnet20", weights=out).eval()
    for key, value in original.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    cfg = converted.pretrained_cfg
    assert cfg.name == "resnet20.akamaster_cifar10" and cfg.metrics == {"top1": 91.73}
    assert cfg.classes == CIFAR10_CLASSES and cfg.file_format == "safetensors" and cfg.url is None

    # A plain .th file in, by path (entry inferred from the file), and back out again.
    out2 = tmp_path / "r20_by_path.safetensors"
    assert main(["weights", "convert", str(CIFAR_FILES[20]), str(out2)]) == 0
    again = create_model("resnet20", weights=out2)
    assert again.pretrained_cfg.model_kwargs["shortcut"] == "A" and again.pretrained_cfg.classes == CIFAR10_CLASSES
    assert torch.equal(again.fc.weight, original.fc.weight)
    with pytest.raises(SystemExit) as exc:
        main(["weights", "convert", str(CIFAR_FILES[20]), str(tmp_path / "x.pth")])
    assert exc.value.code == 2 and not (tmp_path / "x.pth").exists()


def test_convert_torchvision_file_round_trip(tv18, tmp_path):
    ref, path = tv18
    out, entry = convert_to_safetensors(path, tmp_path / "tv18.safetensors")
    assert entry.model == "resnet18" and entry.classes == imagenet_names()
    model = create_model("resnet18", weights=out).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() < 1e-4
    # The embedded-weights format: a file written with an entry is described by it when loaded.
    named = dataclasses.replace(entry, name="resnet18.mine", metrics={"top1": 1.0})
    save_safetensors(model.state_dict(), tmp_path / "named.safetensors", named)
    assert create_model("resnet18", weights=tmp_path / "named.safetensors").pretrained_cfg.name == "resnet18.mine"


def test_classes_are_one_type_and_a_new_head_clears_them(tmp_path):
    """Issue 30: ``pretrained_cfg.classes`` was the string "cifar10" for the embedded weights and a tuple for trained
    files; both are tuples of names now. ``reset_classifier`` left ``pretrained_cfg.num_classes`` (and the class
    names and metrics of the old head) stale."""
    embedded = create_model("resnet20", weights="resnet20.cifar10")
    trained_entry = dataclasses.replace(embedded.pretrained_cfg, name="run", classes=("cat", "dog"),
                                        model_kwargs={**embedded.pretrained_cfg.model_kwargs, "num_classes": 2})
    source = create_model("resnet20", num_classes=2, shortcut="A")
    trained = create_model(weights=save_safetensors(source.state_dict(), tmp_path / "run.safetensors", trained_entry))
    assert embedded.pretrained_cfg.classes == CIFAR10_CLASSES and trained.pretrained_cfg.classes == ("cat", "dog")
    assert get_weights("resnet18.tv_in1k").classes == imagenet_names()
    assert embedded.pretrained_cfg.metrics and embedded.pretrained_cfg.num_classes == 10
    embedded.reset_classifier(3)
    cfg = embedded.pretrained_cfg
    assert (cfg.num_classes, cfg.classes, cfg.metrics) == (3, (), {}) and cfg.name == "resnet20.cifar10"
    embedded.reset_classifier(0)
    assert embedded.pretrained_cfg.num_classes == 0
