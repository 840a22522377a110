"""The weights registry against its sources: torchvision's and Keras' own tables, the CIFAR files."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch

import resnets
from resnets.cli import main
from resnets import create_model
from resnets.classes import CIFAR10_CLASSES, imagenet_names
from resnets.weights import WeightsEntry, cached_file, get_weights, list_weights
from resnets.weights.hub import timm_catalogue
from torchhub_names import hash_prefix_from_url

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "cifar10"


def _tv_weights():
    tvm = pytest.importorskip("torchvision.models")
    for depth in (18, 34, 50, 101, 152):
        enum = getattr(tvm, f"ResNet{depth}_Weights")
        for version in (1, 2):
            w = getattr(enum, f"IMAGENET1K_V{version}", None)
            if w is not None:
                yield f"resnet{depth}", version, w


def test_torchvision_entries_match_torchvision():
    seen = 0
    for model, version, w in _tv_weights():
        e = get_weights(f"{model}.tv_in1k" + ("_v2" if version == 2 else ""))
        assert e.model == model and e.url == w.url and e.file_format == "torch"
        assert e.sha256 == hash_prefix_from_url(w.url) and len(e.sha256) == 8
        assert e.metrics == {"top1": w.meta["_metrics"]["ImageNet-1K"]["acc@1"],
                             "top5": w.meta["_metrics"]["ImageNet-1K"]["acc@5"]}
        assert e.file_size_mb == w.meta["_file_size"]
        t = w.transforms()
        assert (e.preprocessing.resize_size, e.preprocessing.crop_size) == (t.resize_size[0], t.crop_size[0])
        assert e.preprocessing.mean == tuple(t.mean) and e.preprocessing.std == tuple(t.std)
        assert e.classes == imagenet_names() and len(w.meta["categories"]) == e.num_classes
        # The architecture the entry describes has exactly torchvision's parameter count.
        with torch.device("meta"):
            net = create_model(model, **e.model_kwargs)
        assert sum(p.numel() for p in net.parameters()) == w.meta["num_params"]
        seen += 1
    assert seen == 8


def test_keras_entries_match_keras_source():
    spec = importlib.util.find_spec("keras")
    if spec is None:
        pytest.skip("keras not installed")
    source = Path(spec.origin).parent / "src" / "applications" / "resnet.py"
    tree = ast.parse(source.read_text())
    consts = {
        t.id: ast.literal_eval(node.value)
        for node in tree.body if isinstance(node, ast.Assign)
        for t in node.targets if isinstance(t, ast.Name) and t.id in ("BASE_WEIGHTS_PATH", "WEIGHTS_HASHES")
    }
    for model in ("resnet50", "resnet101", "resnet152"):
        for top, suffix, md5 in ((True, "", consts["WEIGHTS_HASHES"][model][0]),
                                 (False, "_notop", consts["WEIGHTS_HASHES"][model][1])):
            e = get_weights(f"{model}.keras_in1k{suffix}")
            assert e.url == f"{consts['BASE_WEIGHTS_PATH']}{model}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"
            assert e.md5 == md5 and e.sha256 is None and e.file_format == "keras_h5"
            assert e.model_kwargs["stride_in_1x1"] is True and e.model_kwargs["bn_eps"] == 1.001e-5
            assert e.num_classes == (1000 if top else 0)
            assert e.preprocessing.channel_order == "BGR" and e.preprocessing.mean == (103.939, 116.779, 123.68)


@pytest.mark.parametrize("depth,top1", [(20, 91.73), (32, 92.63), (44, 93.10), (56, 93.39), (110, 93.68),
                                        (1202, 93.82)])
def test_cifar_entries(depth, top1):
    e = get_weights(f"resnet{depth}.akamaster_cifar10")
    assert e.url.startswith("https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/")
    assert e.metrics["top1"] == top1 and e.classes == CIFAR10_CLASSES and e.num_classes == 10
    assert e.model_kwargs["shortcut"] == "A" and e.license == "BSD-2-Clause"
    assert e.preprocessing.mean == (0.485, 0.456, 0.406) and e.preprocessing.std == (0.229, 0.224, 0.225)
    assert get_weights("cifar10", f"resnet{depth}") is e
    shared = SHARED_CIFAR / e.filename
    if shared.is_file():  # the published file really has the hash prefix we check
        assert hashlib.sha256(shared.read_bytes()).hexdigest().startswith(e.sha256)


@pytest.mark.parametrize("model,expected", [
    ("resnet18", "resnet18.tv_in1k"), ("resnet34", "resnet34.tv_in1k"), ("resnet50", "resnet50.tv_in1k_v2"),
    ("resnet101", "resnet101.tv_in1k_v2"), ("resnet152", "resnet152.tv_in1k_v2"),
])
def test_imagenet_default_is_best_torchvision(model, expected):
    assert get_weights("imagenet", model).name == expected


def test_lookup_errors_name_the_alternatives():
    with pytest.raises(ValueError, match=r"resnet20 has no imagenet weights.*resnet20\.akamaster_cifar10"):
        get_weights("imagenet", "resnet20")
    with pytest.raises(ValueError, match=r"unknown weights 'resnet50\.nope'.*resnet50\.tv_in1k_v2"):
        get_weights("resnet50.nope")
    with pytest.raises(ValueError, match="are for resnet18, not resnet50"):
        get_weights("resnet18.tv_in1k", "resnet50")
    with pytest.raises(ValueError, match="no cifar10 weights"):
        create_model("resnet50", weights="cifar10")


def test_every_entry_is_complete_and_serialisable():
    names = [e.name for e in list_weights()]
    # torchvision, Keras V1 and V2 (tests/test_weights_catalogue.py checks each), akamaster CIFAR, the embedded file.
    assert len(names) == len(set(names)) == 17 + 12 + 6 + 1
    for e in list_weights():
        assert e.name.startswith(e.model + ".") and e.source and e.license
        assert (e.url is None) == (e.asset is not None)
        assert e.url is None or e.sha256 or e.md5
        assert WeightsEntry.from_json(e.to_json()) == e
    assert {e.name for e in list_weights("resnet50")} == {
        "resnet50.tv_in1k", "resnet50.tv_in1k_v2", "resnet50.keras_in1k", "resnet50.keras_in1k_notop"}


def test_unshipped_embedded_weights_say_so():
    entry = get_weights("resnet20.cifar10")
    assert entry.asset and entry.url is None and entry.classes == CIFAR10_CLASSES
    missing = dataclasses.replace(entry, asset="no-such-file.safetensors")
    with pytest.raises(FileNotFoundError, match=r"not shipped in this build.*resnet20\.akamaster_cifar10"):
        cached_file(missing)


def test_cli_list(capsys, tmp_path):
    (tmp_path / "resnet20-12fca82f.th").write_bytes(b"x")
    assert main(["weights", "list", "--model", "resnet20", "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "model", "top-1", "params", "file", "cached", "licence"]
    row = next(line.split() for line in lines if line.startswith("resnet20.akamaster_cifar10"))
    assert row[2:4] == ["91.73", "269,722"] and row[-2:] == ["yes", "BSD-2-Clause"]  # counts as in README's table
    assert main(["weights", "list"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["resnet50.tv_in1k_v2"][:5] == ["resnet50", "80.86", "25,557,032", "97.8", "MB"]
    assert len(rows) == len(list_weights()) + len(timm_catalogue())  # tests/test_hub.py checks timm's
    # a pattern, and 'resnets list --weights' shows the same rows
    assert main(["weights", "list", "--model", "resnet5*"]) == 0
    by_pattern = capsys.readouterr().out
    assert main(["list", "--weights", "resnet5*"]) == 0
    assert capsys.readouterr().out == by_pattern
    models = {line.split()[1] for line in by_pattern.splitlines()[1:]}
    assert {"resnet50", "resnet50d", "resnet50v2"} <= models <= set(resnets.list_models("resnet5*"))
    with pytest.raises(SystemExit) as exc:
        main(["weights", "list", "--model", "resnet7"])
    assert exc.value.code == 2
