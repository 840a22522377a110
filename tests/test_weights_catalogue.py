"""The catalogue against every publisher's own table, read at test time, both ways.

torchvision: every weights enum of ``torchvision.models.resnet`` has an entry with its URL, sha256 prefix,
acc@1/acc@5, file size and evaluation transforms, and every torchvision entry is such an enum.
"""

from __future__ import annotations

import pytest
import torch

from resnets import create_model
from resnets.weights import get_weights, list_weights
from resnets.weights.registry import hash_prefix_from_url

tv_resnet = pytest.importorskip("torchvision.models.resnet")


def _tv_enums() -> dict[str, type]:
    """Every weights enum torchvision's ResNet module publishes (ResNet, ResNeXt, Wide ResNet)."""
    enums = {n: getattr(tv_resnet, n) for n in tv_resnet.__all__ if n.endswith("_Weights")}
    assert len(enums) >= 10, sorted(enums)
    return enums


def _tv_members():
    """(entry name, model name, enum name, enum member) for every published torchvision ResNet-family file."""
    for enum_name, enum in _tv_enums().items():
        model = enum_name.removesuffix("_Weights").lower()  # ResNeXt50_32X4D_Weights -> resnext50_32x4d
        assert callable(getattr(tv_resnet, model, None)), f"{enum_name}: no torchvision builder {model}"
        for w in enum:
            assert w.name in ("IMAGENET1K_V1", "IMAGENET1K_V2"), f"{enum_name}.{w.name}: a tag we do not name yet"
            tag = "tv_in1k" if w.name == "IMAGENET1K_V1" else "tv_in1k_v2"
            yield f"{model}.{tag}", model, enum_name, w


TV_MEMBERS = list(_tv_members())


def test_torchvision_enums_are_all_there():
    names = {name for name, *_ in TV_MEMBERS}
    assert len(names) == len(TV_MEMBERS) == 17
    # Both ways: every enum has an entry, every torchvision entry is an enum.
    catalogued = {e.name for e in list_weights() if e.name.split(".", 1)[1].startswith("tv_")}
    assert catalogued == names, (sorted(names - catalogued), sorted(catalogued - names))
    assert all(get_weights(n).source.startswith("torchvision.models.") for n in catalogued)


@pytest.mark.parametrize("name,model,enum_name,w", TV_MEMBERS, ids=[m[0] for m in TV_MEMBERS])
def test_torchvision_entry_matches_its_enum(name, model, enum_name, w):
    e = get_weights(name)
    assert e.model == model and e.file_format == "torch" and e.md5 is None
    assert e.url == w.url and e.sha256 == hash_prefix_from_url(w.url) and len(e.sha256) == 8
    metrics = w.meta["_metrics"]["ImageNet-1K"]
    assert e.metrics == {"top1": metrics["acc@1"], "top5": metrics["acc@5"]}
    assert e.file_size_mb == w.meta["_file_size"]
    t = w.transforms()
    p = e.preprocessing
    assert (p.resize_size, p.crop_size) == (t.resize_size[0], t.crop_size[0])
    assert p.interpolation == t.interpolation.value
    assert p.mean == tuple(t.mean) and p.std == tuple(t.std) and p.scale == 1 / 255 and p.channel_order == "RGB"
    assert e.classes == "imagenet" and e.num_classes == len(w.meta["categories"]) == 1000
    assert e.license.startswith("BSD-3-Clause") and e.source.startswith(f"torchvision.models.{enum_name}.{w.name} ")
    # resnet50's V2 entry names the recipe section, torchvision the issue comment announcing it.
    assert w.meta["recipe"] in e.source or name == "resnet50.tv_in1k_v2"
    # The architecture is torchvision's, tensor for tensor (on the meta device: no memory, no weights).
    with torch.device("meta"):
        ours = create_model(model, **e.model_kwargs).state_dict()
        theirs = getattr(tv_resnet, model)().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert sum(v.numel() for k, v in ours.items() if "running" not in k and "num_batches" not in k) \
        == w.meta["num_params"]


def test_imagenet_alias_is_torchvision_v2_else_v1():
    models = {model for _, model, *_ in TV_MEMBERS}
    for model in models:
        v2 = f"{model}.tv_in1k_v2"
        expected = v2 if any(name == v2 for name, *_ in TV_MEMBERS) else f"{model}.tv_in1k"
        assert get_weights("imagenet", model).name == expected
    assert get_weights("imagenet", "resnext101_64x4d").name == "resnext101_64x4d.tv_in1k"
    assert get_weights("imagenet", "wide_resnet50_2").name == "wide_resnet50_2.tv_in1k_v2"
