"""A timm user's habits (issue 30 item 10, issue 31 item 3), against timm itself: ``pretrained=True`` and tagged
names, ``forward_intermediates`` indices, ``features_only`` models, and ``num_classes=N`` over weights of another
class count (a new head, as timm builds it), on every kind of head."""

from __future__ import annotations

import re
import shutil
import warnings

import pytest
import torch
from bn_reference import randomize_bn
from conftest import CHECKPOINT

import resnets
from resnets.errors import BadInput, UnknownName
from resnets.networks import FeatureResNet, feature_take_indices
from resnets.weights.loading import default_weights

timm = pytest.importorskip("timm")
from timm.models._features import feature_take_indices as timm_take_indices  # noqa: E402

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def timm_resnet50() -> torch.nn.Module:
    return randomize_bn(timm.create_model("resnet50"), seed=1)


@pytest.fixture(scope="module")
def our_resnet50(timm_resnet50) -> torch.nn.Module:
    model = resnets.create_model("resnet50")
    model.load_state_dict(timm_resnet50.state_dict())
    return model.eval()


INDICES = [None, 1, 3, 5, [0], [1, 3], [-1], [-2, -1], (0, 4), [-5], (4, 2)]


@pytest.mark.parametrize("indices", INDICES, ids=str)
def test_take_indices_are_timms(indices):
    assert feature_take_indices(5, indices) == timm_take_indices(5, indices)


@pytest.mark.parametrize("indices", [0, 6, [5], [-6], []], ids=str)
def test_take_indices_out_of_range_are_bad_input_naming_the_range(indices):
    if indices != []:
        with pytest.raises(AssertionError):  # timm's own refusal
            timm_take_indices(5, indices)
    with pytest.raises(BadInput, match=re.escape(f"indices={indices}")):
        feature_take_indices(5, indices)


def test_forward_intermediates_equals_timms(timm_resnet50, our_resnet50):
    """The same maps for every form of ``indices`` (timm's ``intermediates_only=True``): 0 the stem's, an int the
    last n (``indices=3`` was "'int' object is not iterable"), negative ones from the end."""
    with torch.no_grad():
        for indices in INDICES:
            ours = our_resnet50.forward_intermediates(X, indices)
            theirs = timm_resnet50.forward_intermediates(X, indices, intermediates_only=True)
            assert len(ours) == len(theirs), indices
            for a, b in zip(ours, theirs):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert our_resnet50.feature_info == [{k: f[k] for k in ("num_chs", "reduction")} | {"module": m}
                                         for f, m in zip(timm_resnet50.feature_info,
                                                         ("bn1", "layer1", "layer2", "layer3", "layer4"))]


@pytest.mark.parametrize("out_indices", [None, (1, 2, 3), (0,), (-1,), 2, (3, 1)], ids=str)
def test_features_only_is_timms(timm_resnet50, out_indices):
    """``create_model(name, features_only=True, out_indices=...)``: timm's features model's state dict loads
    strictly (the same parameters, pruned alike), the maps are equal, ``feature_info`` says their channels and
    reductions (in output order, where timm lists ``(3, 1)`` as given)."""
    kwargs = {} if out_indices is None else {"out_indices": out_indices}
    theirs = timm.create_model("resnet50", features_only=True, **kwargs)
    theirs.load_state_dict({k: v for k, v in timm_resnet50.state_dict().items() if k in theirs.state_dict()})
    theirs.eval()
    ours = resnets.create_model("resnet50", features_only=True, **kwargs)
    assert isinstance(ours, FeatureResNet)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    with torch.no_grad():
        got, want = ours(X), theirs(X)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert ours.feature_info.channels() == [m.shape[1] for m in got] == sorted(theirs.feature_info.channels())
    assert ours.feature_info.reduction() == [64 // m.shape[-1] for m in got] == sorted(theirs.feature_info.reduction())
    assert ours.feature_info.channels(0) == theirs.feature_info.channels(0) == 64 and len(ours.feature_info) == 5


def test_features_only_of_other_families_and_its_argument_checks():
    """A CIFAR net has the stem and three stages; a pre-activation one ends in its final norm only when its last
    stage is taken; out_indices without features_only, or a classifier with it, are refused."""
    cifar = resnets.create_model("resnet20", features_only=True).eval()
    with torch.no_grad():
        assert [m.shape[1:] for m in cifar(torch.randn(1, 3, 32, 32))] == [(16, 32, 32), (16, 32, 32), (32, 16, 16),
                                                                          (64, 8, 8)]
    assert cifar.feature_info.reduction() == [1, 1, 2, 4]
    full = resnets.create_model("resnetv2_18").eval()
    first = resnets.create_model("resnetv2_18", features_only=True, out_indices=(1, 2))
    assert not any(k.startswith(("norm.", "layer3.", "layer4.", "fc.")) for k in first.state_dict())
    first.load_state_dict({k: v for k, v in full.state_dict().items() if k in first.state_dict()}, strict=True)
    last = resnets.create_model("resnetv2_18", features_only=True, out_indices=1)  # timm's "the last one"
    last.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("fc.")}, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(last.eval()(X)[0], full.forward_features(X))
        torch.testing.assert_close(first.eval()(X), full.forward_intermediates(X, (1, 2)))
    maps = first.predict(X.permute(0, 2, 3, 1).numpy(), batch_size=1, verbose=0)  # a list, as Keras' multi-output
    assert [m.shape for m in maps] == [(2, 64, 16, 16), (2, 128, 8, 8)]
    lines = []
    first.summary(input_size=(3, 64, 64), print_fn=lines.append)
    assert "-> output [(1, 64, 16, 16), (1, 128, 8, 8)]" in lines[0]
    with pytest.raises(BadInput, match="features_only=True too"):
        resnets.create_model("resnet18", out_indices=(1, 2))
    with pytest.raises(BadInput, match="drop num_classes=10"):
        resnets.create_model("resnet18", features_only=True, num_classes=10)


# --- pretrained=True and tagged names ----------------------------------------------------------------------

@pytest.fixture()
def cifar_cache(tmp_path):
    """A weights cache holding resnet20's default CIFAR-10 file (the shared copy of akamaster's checkpoint)."""
    if not CHECKPOINT.is_file():
        pytest.skip(f"{CHECKPOINT} not found")
    shutil.copy(CHECKPOINT, tmp_path / CHECKPOINT.name)
    return tmp_path


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_pretrained_loads_the_names_default_weights_as_timm_does(cifar_cache):
    """``pretrained=True`` was a TypeError with no pointer to weights=: now the name's default weights, as
    ``timm.create_model(name, pretrained=True)``; ``"name.tag"`` names the weights as in timm."""
    default = resnets.create_model("resnet20", weights="cifar10", cache_dir=cifar_cache)
    pretrained = resnets.create_model("resnet20", pretrained=True, cache_dir=cifar_cache)
    assert pretrained.pretrained_cfg.name == default.pretrained_cfg.name == "resnet20.akamaster_cifar10"
    assert same_weights(pretrained, default)
    tagged = resnets.create_model("resnet20.akamaster_cifar10", pretrained=True, cache_dir=cifar_cache)
    assert same_weights(tagged, default) and tagged.pretrained_cfg == default.pretrained_cfg
    assert not hasattr(resnets.create_model("resnet20", pretrained=False), "pretrained_cfg")
    bare = resnets.create_model("resnet20.akamaster_cifar10")  # timm: the tag's architecture, random weights
    assert not hasattr(bare, "pretrained_cfg") and not same_weights(bare, default)
    assert (default_weights("resnet50"), default_weights("resnet20")) == ("resnet50.tv_in1k_v2",
                                                                          "resnet20.akamaster_cifar10")
    assert default_weights("resnet50d").startswith("resnet50d.")  # timm's catalogue: its best ImageNet-1k tag


def test_pretrained_argument_errors():
    with pytest.raises(BadInput, match=r"pretrained=True loads .* weights='cifar10' .* pass one of them"):
        resnets.create_model("resnet20", pretrained=True, weights="cifar10")
    with pytest.raises(BadInput, match="pretrained must be True or False"):
        resnets.create_model("resnet20", pretrained="yes")
    with pytest.raises(BadInput, match="needs a model name"):
        resnets.create_model(pretrained=True)
    with pytest.raises(BadInput, match="no published weights for pretrained=True"):
        default_weights("plain18")
    with pytest.raises(UnknownName, match="resnet20.nope"):
        resnets.create_model("resnet20.nope")
    with pytest.raises(BadInput, match="names its weights already"):
        resnets.create_model("resnet20.akamaster_cifar10", weights="cifar10")


# --- num_classes=N over weights of another class count -------------------------------------------------------

HEADS = {  # (architecture, head keyword arguments): every kind of head
    "post-activation": ("resnet18", {}),
    "pre-activation": ("resnetv2_18", {}),
    "keras-softmax": ("resnet18", {"classifier_activation": "softmax"}),
    "timm-drop-rate": ("resnet18", {"drop_rate": 0.25}),
    "features": ("resnetv2_18", {"num_classes": 0}),
}


@pytest.mark.parametrize("kind", HEADS)
def test_other_class_count_drops_the_head_with_one_warning(kind, tmp_path):
    """``create_model(name, weights=W, num_classes=N)`` failed on the classifier's shape: now the body loads, the
    head is new (one warning; none for num_classes=0), and ``pretrained_cfg`` no longer claims the old classes."""
    arch, head = HEADS[kind]
    source = randomize_bn(resnets.create_model(arch, num_classes=5))
    path = tmp_path / "five.pth"
    torch.save(source.state_dict(), path)
    num_classes = head.pop("num_classes", 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = resnets.create_model(arch, weights=path, num_classes=num_classes, **head).eval()
    said = [str(w.message) for w in caught if "classifier" in str(w.message)]
    assert len(said) == (num_classes > 0) and all(
        re.fullmatch(f"weights {re.escape(str(path))}.* have 5 classes, the model num_classes=3: their classifier "
                     "is dropped and a new one initialised", line) for line in said)
    body = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in body.items())
    assert model.pretrained_cfg.num_classes == num_classes and model.pretrained_cfg.classes == ()
    with torch.no_grad():
        out = model(X)
        torch.testing.assert_close(model.forward_head(model.forward_features(X), pre_logits=True),
                                   source.eval().forward_head(source.forward_features(X), pre_logits=True))
    if num_classes:
        assert model.fc.weight.shape == (3, model.num_features) and out.shape == (2, 3)
    else:
        assert out.shape == (2, model.num_features)
    if head.get("classifier_activation"):
        torch.testing.assert_close(out.sum(1), torch.ones(2))
    assert model.drop_rate == head.get("drop_rate", 0.0)


@pytest.mark.parametrize("drop_rate", [0.0, 0.25])
def test_new_head_matches_timms_adaptation(tmp_path, drop_rate):
    """timm's ``pretrained=True, num_classes=N`` over the same file: the same body, a new head of the same shape
    (timm drops it silently; ours says so), the same pre-logits and dropout setting."""
    source = randomize_bn(timm.create_model("resnet18", num_classes=5), seed=2)
    path = tmp_path / "five.pth"
    torch.save(source.state_dict(), path)
    theirs = timm.create_model("resnet18", pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                               num_classes=3, drop_rate=drop_rate).eval()
    with pytest.warns(UserWarning, match="5 classes, the model num_classes=3"):
        ours = resnets.create_model("resnet18", weights=path, num_classes=3, drop_rate=drop_rate).eval()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for k, v in theirs.state_dict().items():
        assert v.shape == ours.state_dict()[k].shape and (k.startswith("fc.") or torch.equal(v, ours.state_dict()[k]))
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_head(ours.forward_features(X), pre_logits=True),
                                   theirs.forward_head(theirs.forward_features(X), pre_logits=True))
    assert ours.drop_rate == theirs.drop_rate


def test_keras_constructor_with_a_file_of_other_classes(tmp_path):
    """Keras' face: ``ResNet18(weights=FILE, classes=3)`` over a 5-class file gives a softmax head of 3."""
    path = tmp_path / "five.pth"
    torch.save(resnets.create_model("resnet18", num_classes=5).state_dict(), path)
    with pytest.warns(UserWarning, match="their classifier is dropped"):
        model = resnets.ResNet18(weights=str(path), classes=3)
    probs = model.predict(X.permute(0, 2, 3, 1).numpy(), verbose=0)
    assert probs.shape == (2, 3) and abs(probs.sum(1) - 1).max() < 1e-5
