"""timm checkpoints on the Hugging Face Hub: ``weights="hf-hub:timm/resnet50.a1_in1k"`` (``@revision`` optional).

A timm model repo holds ``config.json`` (the architecture, class count and names, and ``pretrained_cfg``: the
evaluation preprocessing and licence) beside ``model.safetensors`` or, in older repos, ``pytorch_model.bin``.
Both are fetched with ``huggingface_hub`` into its own cache, so its settings apply unchanged
(``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``HF_TOKEN``), and ``RESNETS_OFFLINE`` keeps them off the
network as it does every other download; the config becomes the :class:`WeightsEntry` that every other reader
uses, and the weights file is read like any local one.
The weights come from the config's commit, so the two always belong together.

``timm_hub.json`` catalogues timm's own ResNet-family repos (``timm/<model>.<tag>``): a short name such as
``"resnet50.a1_in1k"`` means ``"hf-hub:timm/resnet50.a1_in1k"``, and a catalogued repo's entry carries timm's
published top-1/top-5 (the file's ``source`` says where each value was read).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from ..atomic import disk_full, is_disk_full
from ..errors import BadInput, BadWeights, MissingExtra, UnknownName
from ..preprocess import Preprocessing
from ..registry import list_models
from .download import DownloadError, OfflineError, is_offline, probe, unreachable
from .entry import WeightsEntry

PREFIX = "hf-hub:"
CONFIG = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order of preference
# timm's defaults for what a pretrained_cfg leaves out (timm/data/constants.py, timm/data/config.py).
DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION = 0.875, "bicubic"


@functools.lru_cache(maxsize=1)
def timm_catalogue() -> dict[str, WeightsEntry]:
    """timm's ResNet-family Hub checkpoints that resnets builds, by ``<model>.<tag>``, with timm's metrics."""
    doc = json.loads(resources.files(__package__).joinpath("timm_hub.json").read_text())
    return {
        name: dataclasses.replace(entry_from_config(item["config"], f"timm/{name}", "main"), name=name,
                                  metrics=item.get("metrics", {}), metrics_data=item.get("metrics_data", ""))
        for name, item in doc["weights"].items()
    }


def hub_name(weights: object) -> str | None:
    """The ``hf-hub:`` name ``weights`` means (itself, or a catalogued timm tag's repo), else None."""
    if is_hub_name(weights):
        return weights
    if isinstance(weights, str) and weights in timm_catalogue():
        return f"{PREFIX}timm/{weights}"
    return None


def is_hub_name(weights: object) -> bool:
    """Whether ``weights`` names a Hub repo (``hf-hub:ORG/NAME[@REVISION]``) rather than a file or registry name."""
    return isinstance(weights, str) and weights.startswith(PREFIX)


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """``"hf-hub:timm/resnet50.a1_in1k@v1"`` -> ``("timm/resnet50.a1_in1k", "v1")``; a malformed name is an error.

    Both parts are checked before any Hub call: huggingface_hub builds cache paths from them (it writes
    ``refs/<revision>``), so ``@../../somewhere`` would write outside its cache.
    """
    repo_id, at, revision = name.removeprefix(PREFIX).partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")) or (at and not revision):
        raise UnknownName(f"weights {name!r}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION, "
                          "e.g. hf-hub:timm/resnet50.a1_in1k")
    for part in repo_id.split("/"):
        if not _REPO_PART.fullmatch(part) or "--" in part or ".." in part or part.endswith(".git"):
            raise BadInput(f"weights {name!r}: {part!r} is not a Hugging Face repo or organisation name (1 to 96 of "
                           "A-Z a-z 0-9 _ . -, neither starting nor ending with . or -, no -- or .., no .git ending)")
    why = _bad_ref(revision) if revision else None
    if why:
        raise BadInput(f"weights {name!r}: revision {revision!r} is not a branch, tag or commit: it {why}")
    return repo_id, revision or None


# huggingface_hub's repo id rule (utils.validate_repo_id), in ASCII.
_REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def _bad_ref(revision: str) -> str | None:
    """What makes ``revision`` no git ref name (git-check-ref-format's rules, one level allowed), or None.

    A 40-hex commit id passes these rules too.
    """
    if revision == "@":
        return "is '@'"
    if revision.startswith("/") or revision.endswith("/") or "//" in revision:
        return "starts or ends with '/' or holds '//'"
    if ".." in revision or "@{" in revision:
        return f"holds {'..' if '..' in revision else '@{'!r}"
    if found := _REF_FORBIDDEN.search(revision):
        return f"holds {found[0]!r} (no control characters, space, ~ ^ : ? * [ or backslash)"
    if revision.endswith("."):
        return "ends with '.'"
    if any(part.startswith(".") or part.endswith(".lock") for part in revision.split("/")):
        return "has a part starting with '.' or ending with '.lock'"
    return None


def _hub() -> Any:
    """The ``huggingface_hub`` module, or the extra to install."""
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
    except ImportError as e:
        raise MissingExtra('hf-hub: weights need huggingface_hub: pip install "resnets[hub]"') from e
    return huggingface_hub


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a failed connection raises through ``huggingface_hub``: ``OSError`` (its requests-based releases, its
    size check) and the HTTP client's own errors (httpx in 1.x, httpx2 later), whichever it has imported."""
    return (OSError, *(sys.modules[m].HTTPError for m in ("httpx", "httpx2") if m in sys.modules))


def _download(repo_id: str, filename: str, revision: str | None, cache_dir: str | os.PathLike | None) -> Path:
    """One file of the repo, through the Hub cache; the Hub's errors become ours, each naming the repo."""
    hub = _hub()
    errors = hub.errors
    where = f"{repo_id}@{revision}" if revision else repo_id
    # The cache alone when offline (hf_hub_download makes requests of its own even with local_files_only) or when
    # the Hub cannot be reached at all (hf_hub_download retries that for 23 s when the file is not cached).
    down = None if is_offline() or hub.constants.HF_HUB_OFFLINE else probe(hub.constants.ENDPOINT)
    if is_offline() or down is not None:
        found = hub.try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        if not isinstance(found, str):
            raise errors.LocalEntryNotFoundError(f"{filename} of {repo_id} is not in the Hugging Face cache") from down
        return Path(found)
    try:
        return Path(hub.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
    except errors.RepositoryNotFoundError:
        raise UnknownName(f"hf-hub:{repo_id}: no such model repo on {hub.constants.ENDPOINT} (or it is private or "
                          "gated: log in with 'hf auth login' or set HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise UnknownName(f"hf-hub:{repo_id}: the repo has no revision {revision!r}") from None
    except errors.EntryNotFoundError:
        raise  # the caller knows whether a missing file matters
    except (errors.HfHubHTTPError, *_transport_errors()) as e:
        if is_disk_full(e):
            cache = cache_dir or hub.constants.HF_HUB_CACHE
            raise disk_full(f"{filename} of hf-hub:{where} into {cache}", e, "nothing was cached") from e
        raise DownloadError(f"hf-hub:{where}: downloading {filename} from {hub.constants.ENDPOINT} failed "
                            f"(nothing was cached; run again to retry): {e}") from e


def _missing(repo_id: str, revision: str | None, filename: str, error: Exception,
             cache_dir: str | os.PathLike | None) -> Exception:
    """The error for a file the repo lacks, or that is not cached while offline or unreachable."""
    hub = _hub()
    where = f"{repo_id}@{revision}" if revision else repo_id
    if not isinstance(error, hub.errors.LocalEntryNotFoundError):
        return BadWeights(f"hf-hub:{where} has no {filename}: not a timm model repo")
    cache = cache_dir or hub.constants.HF_HUB_CACHE
    if hub.constants.HF_HUB_OFFLINE or is_offline():
        setting = "HF_HUB_OFFLINE" if hub.constants.HF_HUB_OFFLINE else "RESNETS_OFFLINE"
        return OfflineError(f"hf-hub:{where}: {filename} is not in the Hugging Face cache ({cache}) and "
                            f"{setting} is set; download it on a connected machine first")
    cause = error.__cause__ or error
    down = unreachable(cause, hub.constants.ENDPOINT) or cause
    return DownloadError(f"hf-hub:{where}: no usable answer from {hub.constants.ENDPOINT} (HF_ENDPOINT) and {filename} "
                         f"is not in the Hugging Face cache ({cache}): {down}")


def cached_hub_file(name: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The repo's weights file if the Hub cache has it (for listings: no request), else None, also without
    huggingface_hub."""
    try:
        hub = _hub()
    except MissingExtra:
        return None
    repo_id, revision = parse_hub_name(name)
    for filename in WEIGHT_FILES:
        found = hub.try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        if isinstance(found, str):
            return Path(found)
    return None


def entry_from_config(config: dict[str, Any], repo_id: str, revision: str) -> WeightsEntry:
    """The entry a timm ``config.json`` describes: architecture, classes, timm's evaluation preprocessing
    (resize the shorter side to ``floor(crop / crop_pct)``, centre-crop), licence; ``source`` pins the commit."""
    where = f"hf-hub:{repo_id}@{revision}"
    model = config.get("architecture")
    if model not in list_models():
        raise UnknownName(f"{where}: its architecture {model!r} is not one resnets builds (see 'resnets list')")
    cfg = config.get("pretrained_cfg", {})
    size = cfg.get("input_size", (3, 224, 224))
    if cfg.get("crop_mode", "center") != "center" or size[-1] != size[-2]:
        raise BadWeights(f"{where}: preprocessing with crop_mode {cfg.get('crop_mode')!r} and input size {size} "
                         "is not one resnets reproduces (square centre crops only)")
    crop_pct = cfg.get("crop_pct") or DEFAULT_CROP_PCT
    try:
        preprocessing = Preprocessing(
            mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), resize_size=math.floor(size[-1] / crop_pct),
            crop_size=size[-1], interpolation=cfg.get("interpolation") or DEFAULT_INTERPOLATION,
        )
    except (KeyError, ValueError) as e:
        raise BadWeights(f"{where}: config.json's pretrained_cfg is unusable: {e!r}") from None
    num_classes = int(config.get("num_classes", cfg.get("num_classes", 1000)))
    labels = config.get("label_names")
    classes: str | tuple[str, ...]
    if labels:
        classes = tuple(labels)
    else:
        classes = "imagenet" if num_classes == 1000 else tuple(str(i) for i in range(num_classes))
    test = cfg.get("test_input_size")
    also = f"; timm also evaluates it at {test[-1]}px, crop_pct {cfg.get('test_crop_pct', crop_pct)}" if test else ""
    return WeightsEntry(
        name=PREFIX + repo_id, model=model, url=None, sha256=None, file_format="safetensors",
        model_kwargs={"num_classes": num_classes}, preprocessing=preprocessing, classes=classes,
        source=f"{where} (timm pretrained_cfg tag {cfg.get('tag', '?')}{also})",
        license=cfg.get("license", "unknown (not in the repo's config.json)"),
    )


def hub_weights(
    name: str, model: str | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[Path, WeightsEntry]:
    """The local weights file and the entry of the Hub repo ``name`` (``hf-hub:ORG/NAME[@REVISION]``).

    ``model``, when given, must be the repo's architecture. ``cache_dir`` overrides ``HF_HUB_CACHE``.
    """
    repo_id, revision = parse_hub_name(name)
    hub = _hub()
    try:
        config_path = _download(repo_id, CONFIG, revision, cache_dir)
    except hub.errors.EntryNotFoundError as e:
        raise _missing(repo_id, revision, CONFIG, e, cache_dir) from None
    commit = config_path.parent.name  # the cache's snapshots/<commit>/config.json
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise BadWeights(f"hf-hub:{repo_id}@{commit}: config.json is unreadable: {e}") from None
    entry = entry_from_config(config, repo_id, commit)
    listed = timm_catalogue().get(repo_id.removeprefix("timm/")) if repo_id.startswith("timm/") else None
    if listed is not None:  # timm's measurements of its own files
        entry = dataclasses.replace(entry, metrics=listed.metrics, metrics_data=listed.metrics_data)
    if model is not None and model != entry.model:
        raise BadWeights(f"{name} holds a {entry.model}, not a {model}: drop the model name, or pass {entry.model}")
    missing = []
    for filename in WEIGHT_FILES:
        try:
            path = _download(repo_id, filename, commit, cache_dir)
        except hub.errors.EntryNotFoundError as e:
            missing.append(e)
            continue
        kind = "safetensors" if filename.endswith(".safetensors") else "torch"
        return path, dataclasses.replace(entry, url=hub.hf_hub_url(repo_id, filename, revision=commit),
                                         file_format=kind)
    # Not cached and unreachable says more than absent from the Hub.
    error = next((e for e in missing if isinstance(e, hub.errors.LocalEntryNotFoundError)), missing[0])
    raise _missing(repo_id, commit, " or ".join(WEIGHT_FILES), error, cache_dir)
