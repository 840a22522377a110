"""The catalogue against every publisher's own table, read at test time, both ways.

torchvision: every weights enum of ``torchvision.models.resnet`` has an entry with its URL, sha256 prefix,
acc@1/acc@5, file size and evaluation transforms, and every torchvision entry is such an enum.
Keras: every file of ``keras.src.applications.resnet.WEIGHTS_HASHES`` that a Keras application builds (V1 and V2,
with and without top) has an entry with Keras' URL and md5, and every Keras entry is such a file.
"""

from __future__ import annotations

import os

import pytest
import torch

from resnets import create_model
from resnets.classes import imagenet_names
from resnets.preprocess import IMAGENET_CAFFE, IMAGENET_TF
from resnets.weights import get_weights, list_weights
from torchhub_names import hash_prefix_from_url

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
    assert e.classes == imagenet_names() and e.num_classes == len(w.meta["categories"]) == 1000
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


# --- Keras -------------------------------------------------------------------------------------------------------

# Keras' published accuracies and sizes (https://keras.io/api/applications/): top-1, top-5, MB.
KERAS_TABLE = {
    "resnet50": (74.9, 92.1, 98), "resnet101": (76.4, 92.8, 171), "resnet152": (76.6, 93.1, 232),
    "resnet50v2": (76.0, 93.0, 98), "resnet101v2": (77.2, 93.8, 171), "resnet152v2": (78.0, 94.2, 232),
}
# WEIGHTS_HASHES also lists ResNeXt files of the old keras-applications, which no Keras 3 application builds.
KERAS_UNBUILT = {"resnext50", "resnext101"}


@pytest.fixture(scope="module")
def keras_resnet():
    os.environ["KERAS_BACKEND"] = "torch"  # as tests/keras_reference.py: read before keras is first imported
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras runs on {keras.backend.backend()}, not torch")
    from keras.src.applications import resnet

    return keras, resnet


def test_keras_hash_table_is_all_there(keras_resnet):
    keras, resnet = keras_resnet
    hashes = resnet.WEIGHTS_HASHES
    assert set(hashes) - KERAS_UNBUILT == set(KERAS_TABLE), sorted(hashes)
    expected = {}
    for model in KERAS_TABLE:
        for top, suffix in ((True, ""), (False, "_notop")):
            filename = f"{model}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"
            md5 = hashes[model][0 if top else 1]
            expected[f"{model}.keras_in1k{suffix}"] = (resnet.BASE_WEIGHTS_PATH + filename, md5)
    catalogued = {e.name: (e.url, e.md5) for e in list_weights() if e.file_format == "keras_h5"}
    assert catalogued == expected  # both ways: every Keras file has an entry, every Keras entry is a Keras file


@pytest.mark.parametrize("model", sorted(KERAS_TABLE))
@pytest.mark.parametrize("top", [True, False])
def test_keras_entry_is_faithful(model, top):
    e = get_weights(f"{model}.keras_in1k" + ("" if top else "_notop"))
    assert e.model == model and e.file_format == "keras_h5" and e.sha256 is None and len(e.md5) == 32
    assert e.num_classes == (1000 if top else 0) and e.classes == imagenet_names()
    top1, top5, size = KERAS_TABLE[model]
    assert e.metrics == ({"top1": top1, "top5": top5} if top else {})
    assert e.file_size_mb == (size if top else None)
    assert e.license.startswith("MIT") and "keras" in e.source
    if model.endswith("v2"):  # keras.applications.resnet_v2.preprocess_input: mode "tf"
        assert e.preprocessing == IMAGENET_TF and e.model_kwargs == {"num_classes": e.num_classes}
    else:  # keras.applications.resnet.preprocess_input: mode "caffe"
        assert e.preprocessing == IMAGENET_CAFFE and e.model_kwargs["stride_in_1x1"] is True


def test_keras_v2_preprocessing_is_keras_tf_mode(keras_resnet):
    import numpy as np

    keras, _ = keras_resnet
    from keras.applications import resnet_v2

    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype("float32")
    theirs = np.asarray(resnet_v2.preprocess_input(pixels.copy()))
    ours = IMAGENET_TF.normalize(torch.from_numpy(pixels).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("top", [True, False])
def test_keras_v2_architecture_has_keras_size(keras_resnet, top):
    """resnet50v2 with the entry's arguments holds as many numbers as Keras' ResNet50V2 (moving stats included)."""
    keras, _ = keras_resnet
    theirs = keras.applications.ResNet50V2(weights=None, include_top=top).count_params()
    entry = get_weights("resnet50v2.keras_in1k" + ("" if top else "_notop"))
    with torch.device("meta"):
        ours = create_model("resnet50v2", **entry.model_kwargs)
    assert sum(v.numel() for k, v in ours.state_dict().items() if "num_batches" not in k) == theirs
