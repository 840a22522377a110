"""Without a network: a host whose name does not resolve, or where nothing listens, fails the first attempt with
a message naming RESNETS_OFFLINE=1, for the weights catalogue's downloads and for hf-hub: names alike (both used to
retry it for 15 to 23 s). A flaky transfer is still retried (tests/test_download.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

import resnets
from resnets.weights import DownloadError, WeightsEntry, cached_file

UNRESOLVABLE = "nonexistent.invalid"  # .invalid never resolves (RFC 6761)
OFFLINE_HINT = "set RESNETS_OFFLINE=1 to use cached files without trying"


@pytest.fixture(autouse=True)
def no_resolver(monkeypatch) -> None:
    """``.invalid`` names fail as a resolver fails them, without asking one: the test needs no network (an
    unreachable DNS server would take seconds per lookup)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for var in ("RESNETS_OFFLINE", "RESNETS_DOWNLOAD_RETRIES", "RESNETS_DOWNLOAD_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture()
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound (so nothing else takes it) but not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def timed(call) -> tuple[Exception, float]:
    start = time.monotonic()
    with pytest.raises(DownloadError) as caught:
        call()
    return caught.value, time.monotonic() - start


@pytest.mark.parametrize("host", [UNRESOLVABLE, "127.0.0.1:{port}"])
def test_a_catalogue_download_from_an_unreachable_host_fails_at_once(tmp_path, closed_port, host):
    url = f"http://{host.format(port=closed_port)}/weights/net-0123abcd.pth"
    entry = WeightsEntry(name="resnet18.test", model="resnet18", url=url, sha256="0123abcd", file_format="torch")
    error, seconds = timed(lambda: cached_file(entry, tmp_path, progress=False))
    reason = "its name does not resolve" if host == UNRESOLVABLE else "no connection (Connection refused)"
    assert seconds < 2
    name = host.format(port=closed_port).split(":")[0]
    assert f"could not download {url}: cannot reach {name}: {reason}" in str(error)
    assert OFFLINE_HINT in str(error)
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("host", [UNRESOLVABLE, "127.0.0.1:{port}"])
def test_an_unreachable_hub_fails_at_once(tmp_path, monkeypatch, closed_port, host):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://{host.format(port=closed_port)}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    resnets.weights.hub.timm_catalogue()  # read before the clock starts
    error, seconds = timed(lambda: resnets.create_model(weights="hf-hub:timm/resnet18.a1_in1k"))
    assert seconds < 2
    assert f"hf-hub:timm/resnet18.a1_in1k: no usable answer from {constants.ENDPOINT}" in str(error)
    assert f"cannot reach {host.format(port=closed_port).split(':')[0]}" in str(error) and OFFLINE_HINT in str(error)
