"""Class activation maps: checked against pytorch-grad-cam, against the maths of CAM, on real CIFAR images,
for their dependence on the learned weights, and for leaving the model as it was found."""

from __future__ import annotations

import copy
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import resnets
from conftest import CLASSES, TEST_TAR
from resnets.cli import main
from resnets.explain import explain
from resnets.explain_images import jet, output_names, view_box
from resnets.preprocess import CIFAR10, IMAGENET_TORCH

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"


@pytest.fixture(scope="module")
def cifar() -> nn.Module:
    return resnets.create_model("resnet20", weights="resnet20.cifar10").eval()


@pytest.fixture(scope="module")
def examples(cifar: nn.Module) -> torch.Tensor:
    recipe = cifar.pretrained_cfg.preprocessing
    return torch.stack([recipe(resnets.load_img(p)) for p in sorted(EXAMPLES.glob("*.jpg"))])


@pytest.fixture(scope="module")
def cifar_test_100(cifar: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 10 test images of every CIFAR-10 class, straight from the tar, with their labels."""
    if not TEST_TAR.is_file():
        pytest.skip(f"{TEST_TAR} not found")
    recipe = cifar.pretrained_cfg.preprocessing
    images, labels = [], []
    with tarfile.open(TEST_TAR) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 3 and int(Path(parts[2]).stem) < 10:
                images.append(recipe(Image.open(io.BytesIO(tar.extractfile(member).read()))))
                labels.append(CLASSES.index(parts[1]))
    assert len(images) == 100
    return torch.stack(images), torch.tensor(labels)


def correlations(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> np.ndarray:
    """Pearson correlation per map; a constant map correlates 0 with anything."""
    a, b = (np.asarray(t, dtype=np.float64).reshape(len(t), -1) for t in (a, b))
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(1) / np.where(norms > 0, norms, 1), 0.0)


def reference_maps(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: int, method: str) -> np.ndarray:
    """pytorch-grad-cam's maps on a copy of the model (its hooks never touch ours), on the logits."""
    gradcam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ref = copy.deepcopy(model)
    ref.classifier_activation = None  # Keras-style models end in softmax; Grad-CAM explains the logit
    cls = {"gradcam": gradcam.GradCAM, "gradcam++": gradcam.GradCAMPlusPlus}[method]
    with cls(ref, [getattr(ref, ref.stage_names[layer - 1])]) as cam:
        return cam(x, targets=[ClassifierOutputTarget(int(c)) for c in classes])


def _random(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return resnets.create_model(name, **kwargs).eval()


# --- against an independent implementation ----------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("layer", [1, 2, 3])
def test_matches_pytorch_grad_cam_on_trained_cifar_net(cifar, examples, method, layer):
    found = explain(cifar, examples, method=method, layer=layer)
    ref = reference_maps(cifar, examples, found.classes, layer, method)
    assert found.maps.shape == (len(examples), 32, 32)
    varying = ref.reshape(len(ref), -1).std(1) > 0  # a map that is all zeros (no positive evidence) has no correlation
    assert varying.sum() >= len(ref) // 2 and (correlations(found.maps, ref)[varying] >= 0.99).all()
    np.testing.assert_allclose(found.maps.numpy(), ref, atol=1e-4)


OTHER_NETWORKS = {
    "resnet18": lambda: _random("resnet18"),
    "plain20": lambda: _random("plain20"),
    "resnet50-v1": lambda: _random("resnet50", stride_in_1x1=True),
    "keras-ResNet18": lambda: (torch.manual_seed(0), resnets.ResNet18(weights=None, classes=7))[1].eval(),  # softmax top
}


@pytest.mark.parametrize("name, method", [
    ("resnet18", "gradcam"), ("resnet18", "gradcam++"), ("plain20", "gradcam"), ("plain20", "gradcam++"),
    ("resnet50-v1", "gradcam"), ("keras-ResNet18", "gradcam"),
])
@pytest.mark.slow
def test_matches_pytorch_grad_cam_on_other_networks(name, method):
    model = OTHER_NETWORKS[name]()
    size = min(model.input_size[-1], 96)  # ImageNet nets at 96x96 (3x3 last stage): same maths, 5x faster
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    last = len(model.stage_names)
    informative = 0
    for layer in (2, last):
        for target in (None, torch.tensor([3, 5])):
            found = explain(model, x, target=target, method=method, layer=layer)
            assert found.maps.shape == (2, size, size)
            ref = reference_maps(model, x, found.classes, layer, method)
            flat = found.maps.flatten(1).amax(1) == 0  # no positive evidence anywhere: both must say so
            assert np.array_equal(flat.numpy(), ref.reshape(2, -1).max(1) == 0)
            assert (correlations(found.maps, ref)[~flat.numpy()] >= 0.99).all(), (layer, target)
            informative += int((~flat).sum())
    assert informative >= 4


# --- the maths of CAM --------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [
    lambda: resnets.create_model("resnet20", weights="resnet20.cifar10").eval(),
    lambda: _random("resnet18"),
    lambda: _random("plain20"),
], ids=["resnet20-cifar10", "resnet18", "plain20"])
def test_cam_is_the_classifier_weighted_feature_map(build):
    model = build()
    size = model.input_size[-1]
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fmap = model.forward_features(x)
        logits = model(x)
    assert explain(model, x, method="cam").classes.tolist() == logits.argmax(1).tolist()
    target = torch.tensor([1, 4, 7])  # distinct classes: random nets tend to give every input the same top class
    found = explain(model, x, target=target, method="cam")
    torch.testing.assert_close(found.probabilities, logits.softmax(1)[torch.arange(3), target])
    weights = model.fc.weight[target]  # (N, C): Zhou et al.'s M_c(x, y) = sum_k w_k^c f_k(x, y)
    expected = (weights[:, :, None, None] * fmap).sum(1)
    torch.testing.assert_close(found.raw_maps, expected, rtol=1e-5, atol=1e-5)
    # GAP: the map's mean plus the bias is the logit itself.
    torch.testing.assert_close(found.raw_maps.mean((1, 2)) + model.fc.bias[target], logits[torch.arange(3), target],
                               rtol=1e-4, atol=1e-4)
    # The picture: ReLU, bilinear upsampling to the input, each map scaled to [0, 1].
    up = F.interpolate(expected.clamp(min=0)[:, None], size=(size, size), mode="bilinear")[:, 0]
    lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    scaled = torch.where(hi > lo, (up - lo) / (hi - lo).clamp(min=1e-12), torch.zeros_like(up))  # no positive part: 0
    torch.testing.assert_close(found.maps, scaled, rtol=1e-4, atol=1e-5)
    assert found.maps.amin() >= 0 and found.maps.amax() <= 1


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "plain20"])
def test_cam_is_gradcam_up_to_scale_on_gap_networks(name):
    # d logit_c / dA = w_c / (h w) at every position, so Grad-CAM's channel weights are w_c / (h w).
    model = _random(name)
    size = model.input_size[-1]
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(3))
    cam, grad = explain(model, x, method="cam"), explain(model, x, method="gradcam")
    h, w = cam.raw_maps.shape[-2:]
    torch.testing.assert_close(grad.raw_maps * (h * w), cam.raw_maps, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad.maps, cam.maps, rtol=1e-4, atol=1e-5)


# --- what the maps say -------------------------------------------------------------------------------


def test_maps_depend_on_the_learned_weights(cifar, cifar_test_100):
    """Adebayo et al. 2018: re-initialising the last stage must change the maps."""
    x, y = cifar_test_100
    scrambled = copy.deepcopy(cifar)
    torch.manual_seed(0)
    for m in getattr(scrambled, scrambled.stage_names[-1]).modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    # a map that ignored the weights would correlate 1.0; Grad-CAM++ weighs positive gradients only and keeps
    # more of the input's layout, hence its looser limit (the measured means are in the issue notes)
    for method, limit in (("gradcam", 0.5), ("gradcam++", 0.7)):
        before = explain(cifar, x, target=y, method=method).maps
        after = explain(scrambled, x, target=y, method=method).maps
        assert correlations(before, after).mean() < limit, method


def test_trained_cifar_net_looks_at_the_object(cifar, cifar_test_100):
    x, y = cifar_test_100
    ring = torch.ones(32, 32, dtype=torch.bool)
    ring[4:28, 4:28] = False  # the outer 4 pixels
    for target in (None, y):
        maps = explain(cifar, x, target=target).maps
        centre, border = maps[:, 8:24, 8:24].mean((1, 2)), maps[:, ring].mean(1)
        assert (centre > border).float().mean() >= 0.6


# --- the model is left as it was found ----------------------------------------------------------------


def _hooks(model: nn.Module) -> int:
    return sum(len(getattr(m, a)) for m in model.modules() for a in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


@pytest.mark.parametrize("method", ["cam", "gradcam", "gradcam++"])
def test_model_left_as_found(method):
    model = _random("resnet20")
    model.train()
    model.layer1.eval()  # a mixed state (e.g. frozen BN while fine-tuning) must survive too
    for p in model.layer2.parameters():
        p.requires_grad_(False)
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hooks(model)
    x = torch.randn(4, 3, 32, 32)
    explain(model, x, method=method)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert _hooks(model) == hooks
    for k, v in model.state_dict().items():  # BN running statistics included: it ran in eval mode
        assert torch.equal(v, state[k]), k


def test_works_under_no_grad_inference_mode_and_frozen_weights(cifar, examples):
    expected = explain(cifar, examples).maps
    with torch.no_grad():
        assert torch.equal(explain(cifar, examples).maps, expected)
    with torch.inference_mode():
        x = examples.clone()  # an inference tensor
        assert x.is_inference()
        assert torch.equal(explain(cifar, x, method="gradcam++").maps,
                           explain(cifar, examples, method="gradcam++").maps)
    frozen = copy.deepcopy(cifar).requires_grad_(False)
    assert torch.equal(explain(frozen, examples).maps, expected)
    assert not any(p.requires_grad for p in frozen.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(cifar, examples):
    gpu = copy.deepcopy(cifar).cuda()
    found = explain(gpu, examples)
    assert found.maps.device.type == "cuda"
    assert correlations(found.maps.cpu(), explain(cifar, examples).maps).min() > 0.999


def test_targets_and_errors(cifar, examples):
    n = len(examples)
    assert explain(cifar, examples, target=3).classes.tolist() == [3] * n
    assert explain(cifar, examples, target=list(range(n))).classes.tolist() == list(range(n))
    with pytest.raises(ValueError, match="out of range"):
        explain(cifar, examples, target=10)
    with pytest.raises(ValueError, match="2 class indices for a batch of 6"):
        explain(cifar, examples, target=[1, 2])
    with pytest.raises(ValueError, match="layer must lie in 1..3"):
        explain(cifar, examples, layer=4)
    with pytest.raises(ValueError, match="CAM is defined on the last stage"):
        explain(cifar, examples, method="cam", layer=2)
    with pytest.raises(ValueError, match="method must be one of"):
        explain(cifar, examples, method="scorecam")
    with pytest.raises(ValueError, match="needs a classifier"):
        explain(resnets.ResNet18(weights=None, include_top=False), torch.randn(1, 3, 64, 64))
    with pytest.raises(TypeError, match="needs a resnets ResNet"):
        explain(nn.Sequential(nn.Conv2d(3, 3, 1)), torch.randn(1, 3, 8, 8))


# --- pictures and the command line ------------------------------------------------------------------------


def test_jet_follows_matplotlib():
    cm = pytest.importorskip("matplotlib").colormaps["jet"]
    v = np.linspace(0, 1, 101)
    assert np.abs(jet(v).astype(float) / 255 - cm(v)[:, :3]).max() < 0.15
    assert jet(np.array([0.0, 1.0])).tolist() == [[0, 0, 128], [128, 0, 0]]


def test_view_box_is_what_the_network_sees():
    # 500x375 photo, torchvision recipe: shorter side to 256, centre 224 -> 224 * 375 / 256 original pixels.
    side = 224 * 375 / 256
    assert view_box((500, 375), IMAGENET_TORCH) == pytest.approx(
        ((500 - side) / 2, (375 - side) / 2, (500 + side) / 2, (375 + side) / 2))
    assert view_box((32, 32), CIFAR10) == pytest.approx((0, 0, 32, 32))


def test_output_names_never_collide():
    paths = [Path("a/cat.jpg"), Path("b/cat.png"), Path("c/Cat.jpg"), Path("dog.jpg")]
    assert output_names(paths) == ["cat.png", "cat-2.png", "Cat-3.png", "dog.png"]


CLI_MODEL = ["--model", "resnet20", "--weights", "resnet20.cifar10", "--workers", "0", "--device", "cpu"]


def test_cli_writes_pngs_and_sheet_and_lists_bad_images(tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    photos = [EXAMPLES / "cifar10_cat.jpg", EXAMPLES / "zebra.jpg"]
    out = tmp_path / "maps"
    code = main(["explain", *map(str, photos), str(bad), *CLI_MODEL, "-o", str(out), "--sheet", "--target", "cat"])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.jpg" in captured.err and "skipped" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["cifar10_cat.png", "sheet.png", "zebra.png"]
    assert "cat" in captured.out
    for name in ("cifar10_cat.png", "zebra.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width == 256 and img.height > 256
    with Image.open(out / "sheet.png") as sheet:
        assert sheet.width > 2 * 256
    # The panel is the photo blended with the map, not the photo alone.
    with Image.open(out / "cifar10_cat.png") as img:
        panel = np.asarray(img.convert("RGB"))[:256].astype(float)
    photo = np.asarray(resnets.load_img(photos[0]).resize((256, 256), Image.Resampling.BICUBIC)).astype(float)
    assert np.abs(panel - photo).mean() > 10


def test_cli_all_good_exits_0_and_target_by_index(tmp_path, capsys):
    code = main(["explain", str(EXAMPLES / "cifar10_ship.jpg"), *CLI_MODEL, "-o", str(tmp_path),
                 "--method", "gradcam++", "--layer", "2", "--target", "8"])
    assert code == 0
    assert (tmp_path / "cifar10_ship.png").is_file()
    assert "ship" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--target", "unicorn"], "no class named 'unicorn'"),
    (["--layer", "4"], "layer must lie in 1..3"),
    (["--method", "cam", "--layer", "1"], "CAM is defined on the last stage"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    code = main(["explain", str(EXAMPLES / "cifar10_ship.jpg"), *CLI_MODEL, "-o", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err


def test_predict_explain_writes_maps_beside_the_predictions(tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"")
    out = tmp_path / "maps"
    code = main(["predict", str(EXAMPLES / "cifar10_cat.jpg"), str(EXAMPLES / "cifar10_ship.jpg"), str(bad),
                 *CLI_MODEL, "--json", "--explain", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    lines = [json.loads(line) for line in captured.out.splitlines()]  # stdout stays pure JSON
    assert [Path(r["path"]).name for r in lines if "error" not in r] == ["cifar10_cat.jpg", "cifar10_ship.jpg"]
    assert captured.err.count("broken.jpg") == 1  # listed once, by predict
    assert sorted(p.name for p in out.iterdir()) == ["cifar10_cat.png", "cifar10_ship.png"]


def test_optimized_model_is_explained_through_its_eager_weights(tmp_path, cifar):
    from resnets.cli.explain import write_explanations
    from resnets.pipeline import Inference

    wrapped = nn.Sequential(copy.deepcopy(cifar))  # stands in for a compiled or quantised model: no stages
    inf = Inference(wrapped, cifar.pretrained_cfg.preprocessing, "cifar10", "resnet20", "resnet20.cifar10")
    assert write_explanations(inf, [EXAMPLES / "cifar10_cat.jpg"], tmp_path, workers=0, command=None) == 0
    assert (tmp_path / "cifar10_cat.png").is_file()
    inf.weights = None
    with pytest.raises(ValueError, match="random weights"):
        write_explanations(inf, [EXAMPLES / "cifar10_cat.jpg"], tmp_path, workers=0, command=None)


def test_class_index_by_name_id_and_index():
    from resnets.classes import class_index

    assert class_index("imagenet", "Siberian husky") == class_index("imagenet", "siberian_husky") == 250
    assert class_index("imagenet", "n02110185") == 250
    assert class_index("cifar10", "3") == class_index("cifar10", "cat") == 3
    with pytest.raises(ValueError, match="out of range"):
        class_index("cifar10", "10")
