"""The keras.applications-style constructors: semantics and argument checks."""

import numpy as np
import pytest
import torch

import resnets
from resnets import ResNet18, ResNet50


def test_include_top_gives_probabilities():
    model = ResNet18(weights=None).eval()
    with torch.no_grad():
        p = model(torch.randn(2, 3, 64, 64))
    assert p.shape == (2, 1000)
    assert torch.allclose(p.sum(1), torch.ones(2), atol=1e-5) and (p >= 0).all()


def test_logits_with_no_activation_match_create_model():
    torch.manual_seed(0)
    keras_like = ResNet18(weights=None, classifier_activation=None, classes=5).eval()
    plain = resnets.create_model("resnet18", num_classes=5).eval()
    plain.load_state_dict(keras_like.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(keras_like(x), plain(x))
        assert torch.allclose(ResNet18(weights=None, classes=5).eval().forward_head(plain.forward_features(x)).sum(), torch.tensor(1.0))


@pytest.mark.slow
@pytest.mark.parametrize("pooling, shape", [(None, (1, 2048, 7, 7)), ("avg", (1, 2048)), ("max", (1, 2048))])
def test_notop_outputs(pooling, shape):
    model = ResNet50(weights=None, include_top=False, pooling=pooling).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        assert out.shape == shape
        fmap = model.forward_features(x)
    if pooling == "avg":
        assert torch.allclose(out, fmap.mean((2, 3)), atol=1e-5)
    if pooling == "max":
        assert torch.equal(out, fmap.amax((2, 3)))


def test_dropout_rate_before_classifier():
    model = ResNet18(weights=None, dropout_rate=0.5, classifier_activation=None).train()
    x = torch.randn(4, 3, 32, 32)
    model.bn1.eval()
    a, b = model(x), model(x)
    assert not torch.allclose(a, b)  # dropout is active in training
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), model(x))


def test_predict_accepts_keras_nhwc_numpy():
    model = ResNet18(weights=None, classes=3)
    x = np.random.default_rng(0).random((2, 48, 48, 3), dtype=np.float32)
    out = model.predict(x)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pooling="mean"), "pooling must be None, 'avg' or 'max'"),
        (dict(weights="imagenet", classes=10), "classes should be 1000"),
        (dict(input_shape=(224, 224, 1)), "3 channels"),
        (dict(input_shape=(3, 16, 224)), "at least 32x32"),
        (dict(input_shape=(224, 224)), "3 entries"),
        (dict(weights="imagenette"), "weights must be None"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet50(**kwargs)


def test_input_shape_sets_summary_size():
    model = ResNet50(weights=None, include_top=False, input_shape=(160, 128, 3))
    assert model.input_size == (3, 160, 128)
    s = model.summary(print_fn=None)
    assert s.input_size == (3, 160, 128)


def test_predict_returns_what_the_head_gives_and_decode_takes_only_probabilities():
    """Issue 30: ``create_model(...).predict`` gave logits and ``ResNet18().predict`` probabilities, and
    decode_predictions printed the logits as probabilities. One rule: predict returns the head's output (torchvision's
    logits without an activation, Keras' softmax with its default one); decode_predictions refuses logits."""
    import torchvision

    from resnets.errors import BadInput

    torch.manual_seed(0)
    plain = resnets.create_model("resnet18").eval()
    keras_like = ResNet18(weights=None).eval()
    keras_like.load_state_dict(plain.state_dict())
    reference = torchvision.models.resnet18().eval()
    reference.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = reference(x)
    np.testing.assert_allclose(plain.predict(x, verbose=0), logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(keras_like.predict(x, verbose=0), logits.softmax(1).numpy(), atol=1e-6)
    with pytest.raises(BadInput, match="not probabilities.*apply softmax first"):
        resnets.decode_predictions(plain.predict(x, verbose=0))
    assert resnets.decode_predictions(keras_like.predict(x, verbose=0), top=1) == \
        resnets.decode_predictions(logits.softmax(1), top=1)
