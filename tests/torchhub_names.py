"""The torch.hub file-name convention the catalogue tests check published URLs against."""

from __future__ import annotations

import re

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")


def hash_prefix_from_url(url: str) -> str:
    """The sha256 prefix torch.hub-style file names carry (``resnet18-f37072fd.pth`` -> ``f37072fd``)."""
    match = _HASH_IN_NAME.search(url.rsplit("/", 1)[-1])
    assert match, f"no sha256 prefix in the file name of {url}"
    return match.group(1)
