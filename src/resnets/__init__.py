"""resnets: the deep residual networks of He et al. (CVPR 2016) on plain PyTorch.

Every model is an ordinary ``torch.nn.Module`` taking NCHW float tensors.
"""

__version__ = "0.1.0"

from .blocks import BasicBlock, Bottleneck, PadShortcut, convolutional_block, identity_block, make_shortcut
from .inference import optimize
from .keras_api import ResNet18, ResNet34, ResNet50, ResNet101, ResNet152
from .networks import ResNet, make_stage
from .factory import BUILDERS, create_model
from .registry import list_models, register_model
from .summary import summarize
from .classes import decode_predictions
from .data.images import array_to_img, img_to_array, load_img
from .explain import Explanation, explain
from .preprocess import Preprocessing, preprocess_input
from .weights import WeightsEntry, get_weights, list_weights

globals().update(BUILDERS)  # resnets.resnet50(weights=...), resnets.plain56(), ...

__all__ = [
    "Explanation", "explain",
    "BasicBlock", "Bottleneck", "PadShortcut", "ResNet", "ResNet18", "ResNet34", "ResNet50", "ResNet101",
    "ResNet152", "convolutional_block", "create_model", "identity_block", "list_models", "make_shortcut",
    "make_stage", "optimize", "register_model", "summarize",
    *BUILDERS,
    "Preprocessing", "array_to_img", "decode_predictions", "img_to_array", "load_img", "preprocess_input",
    "WeightsEntry", "get_weights", "list_weights",
]
