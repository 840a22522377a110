"""The classic Keras ResNet50 tutorial runs with only its import lines changed, and gives Keras' numbers.

The weights are a Keras ResNet50 with random weights and BN statistics, written in the published
legacy HDF5 layout (the real file needs the network); Keras itself is the reference.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from keras_reference import keras, keras_resnet, write_legacy_h5

IMG_PATH = str(Path(__file__).resolve().parents[1] / "examples" / "images" / "siberian_husky.jpg")


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    top = keras_resnet(50, include_top=True, size=224, seed=1)
    folder = tmp_path_factory.mktemp("keras")
    return top, write_legacy_h5(top, folder / "resnet50_weights_tf_dim_ordering_tf_kernels.h5")


def keras_input():
    from keras.applications.resnet50 import preprocess_input
    from keras.utils import img_to_array, load_img

    x = img_to_array(load_img(IMG_PATH, target_size=(224, 224)))
    return preprocess_input(np.expand_dims(x, axis=0))


@pytest.mark.slow
def test_classify_example(keras_files, capsys):
    keras_model, weights_file = keras_files
    # --- the tutorial, imports changed -----------------------------------------------
    from resnets import ResNet50
    from resnets.data import images as image
    from resnets import preprocess_input, decode_predictions

    model = ResNet50(weights=str(weights_file))
    img_path = IMG_PATH
    img = image.load_img(img_path, target_size=(224, 224))
    x = image.img_to_array(img)
    x = np.expand_dims(x, axis=0)
    x = preprocess_input(x)

    preds = model.predict(x)
    print('Predicted:', decode_predictions(preds, top=3)[0])
    # ---------------------------------------------------------------------------------
    expected = torch.from_numpy(np.asarray(keras_model.predict(keras_input(), verbose=0))).softmax(1).numpy()
    assert preds.shape == (1, 1000)
    np.testing.assert_allclose(preds, expected, atol=1e-5)
    top3 = np.argsort(-expected[0])[:3]
    decoded = decode_predictions(preds, top=3)[0]
    assert [d[0] for d in decoded] == [resnets_wnid(i) for i in top3]
    assert "Predicted: [(" in capsys.readouterr().out


def resnets_wnid(index: int) -> str:
    from resnets.classes import imagenet_classes

    return imagenet_classes()[index][0]


@pytest.mark.slow
def test_feature_example(keras_files):
    keras_model, weights_file = keras_files
    # --- the tutorial, imports changed -----------------------------------------------
    from resnets import ResNet50
    from resnets.data import images as image
    from resnets import preprocess_input

    model = ResNet50(weights=str(weights_file), include_top=False)
    img_path = IMG_PATH
    img = image.load_img(img_path, target_size=(224, 224))
    x = image.img_to_array(img)
    x = np.expand_dims(x, axis=0)
    x = preprocess_input(x)

    features = model.predict(x)
    # ---------------------------------------------------------------------------------
    notop = keras.Model(keras_model.input, keras_model.get_layer("conv5_block3_out").output)
    expected = np.asarray(notop.predict(keras_input(), verbose=0)).transpose(0, 3, 1, 2)
    assert features.shape == (1, 2048, 7, 7)
    np.testing.assert_allclose(features, expected, atol=1e-4 * np.abs(expected).max())
    pooled = ResNet50(weights=str(weights_file), include_top=False, pooling="avg").predict(x)
    np.testing.assert_allclose(pooled, expected.mean((2, 3)), atol=1e-4 * np.abs(expected).max())


def test_imagenet_weights_pick_keras_files_for_the_keras_face(monkeypatch):
    """``ResNet50(weights="imagenet")`` asks for Keras' own file, whose recipe is the caffe one."""
    import resnets.keras_api as api

    asked = {}

    def fake_create(name, weights=None, **kwargs):
        asked[name] = weights
        raise RuntimeError("stop")

    monkeypatch.setattr(api, "create_model", fake_create)
    for include_top, depth, expected in [(True, 50, "resnet50.keras_in1k"), (False, 152, "resnet152.keras_in1k_notop"),
                                         (True, 18, "imagenet")]:
        with pytest.raises(RuntimeError):
            api.keras_resnet(depth, include_top=include_top, weights="imagenet")
        assert asked[f"resnet{depth}"] == expected
    from resnets.weights import get_weights

    assert get_weights("resnet50.keras_in1k").preprocessing.channel_order == "BGR"
