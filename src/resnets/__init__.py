"""resnets: the deep residual networks of He et al. (CVPR 2016) on plain PyTorch.

Every model is an ordinary ``torch.nn.Module`` taking NCHW float tensors.

The public names load on first use (PEP 562), so ``import resnets`` and the ``resnets`` command's
``--help`` do not pay for importing torch; ``from resnets import ResNet50`` works as always.
"""

import importlib as _importlib
import sys as _sys
import types as _types
from typing import Any as _Any

# Only the public API (and the subpackages, once imported) live in this namespace: the helpers above are
# underscored, so ``dir(resnets)`` and tab completion show no ``resnets.sys``.
__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("BasicBlock", "BlockOptions", "Bottleneck", "PadShortcut", "PreActBasicBlock",
                     "PreActBottleneck", "convolutional_block", "identity_block", "make_shortcut"), ".blocks"),
    "optimize": ".inference",
    **dict.fromkeys(("ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2",
                     "ResNet152V2"), ".keras_api"),
    **dict.fromkeys(("ResNet", "make_stage"), ".networks"),
    **dict.fromkeys(("BUILDERS", "create_model"), ".factory"),
    **dict.fromkeys(("list_models", "register_model"), ".registry"),
    "summarize": ".summary",
    "decode_predictions": ".classes",
    **dict.fromkeys(("array_to_img", "img_to_array", "load_img"), ".data.images"),
    **dict.fromkeys(("Explanation", "explain"), ".explain"),
    "train": ".train",
    "evaluate": ".evaluate",
    **dict.fromkeys(("Preprocessing", "preprocess_input"), ".preprocess"),
    **dict.fromkeys(("WeightsEntry", "get_weights", "list_weights"), ".weights"),
}
_NOT_IN_ALL = ("BUILDERS",)


def _builders() -> dict[str, _Any]:
    """``resnets.resnet50(weights=...)``, ``resnets.plain56()``...: one builder per registered architecture."""
    return _importlib.import_module(".factory", __name__).BUILDERS


def __getattr__(name: str) -> _Any:
    if name in _EXPORTS:
        value = getattr(_importlib.import_module(_EXPORTS[name], __name__), name)
    elif name == "__all__":
        value = [n for n in _EXPORTS if n not in _NOT_IN_ALL] + list(_builders())
    elif not name.startswith("_") and name in _builders():
        value = _builders()[name]
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *__getattr__("__all__")})


class _Package(_types.ModuleType):
    """Keeps ``resnets.explain``, ``resnets.train`` and ``resnets.evaluate`` the functions: importing the submodule of that name
    would otherwise bind the module to it (``from resnets.train import make_config`` still works)."""

    def __setattr__(self, name: str, value: _Any) -> None:
        if isinstance(value, _types.ModuleType) and _EXPORTS.get(name) == f".{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
