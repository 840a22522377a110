"""Odd folders and hostile names: symbolic links that loop back into a data set, Hub names that climb out of
the cache, a full disk under every writer."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.data.images import find_images
from resnets.data.source import read_split

COLOURS = {"cat": [(200, 30, 30), (180, 60, 20)], "dog": [(20, 30, 200), (40, 90, 160)]}
LINK_WARNING = r"not following 1 symbolic link\(s\) .*cat[/\\]loop -> .*"


@pytest.fixture()
def looped(tmp_path) -> Path:
    """``train/{cat,dog}/`` of two flat-colour photos each, with ``ln -s .. train/cat/loop``, the link that made a
    lister take every image of every class again as "cat"."""
    for cls, colours in COLOURS.items():
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i, colour in enumerate(colours):
            Image.new("RGB", (32, 32), colour).save(tmp_path / "train" / cls / f"{cls}{i}.png")
    (tmp_path / "train" / "cat" / "loop").symlink_to("..")
    return tmp_path


def real_images(root: Path) -> list[str]:
    return sorted(str(p) for p in (root / "train").glob("*/*.png"))


def test_a_link_back_to_the_data_set_lists_no_image_twice_nor_under_another_class(looped):
    with pytest.warns(UserWarning, match=LINK_WARNING + r"train \(the folder being listed or one above it\)"):
        split = read_split(looped, "train")
    assert split.classes == ("cat", "dog")
    assert sorted(map(str, split.images)) == real_images(looped)
    assert [split.classes[i] for i in split.labels] == [Path(p).parent.name for p in split.images]
    with pytest.warns(UserWarning, match=LINK_WARNING):
        assert list(map(str, find_images(looped / "train"))) == real_images(looped)


@pytest.mark.slow  # three commands, 7 s
def test_eval_features_and_predict_on_a_looped_folder_see_each_image_once(looped, tmp_path, capsys):
    weights = ["--model", "resnet20", "--weights", "resnet20.cifar10", "--workers", "0"]
    with pytest.warns(UserWarning, match=LINK_WARNING):
        assert main(["eval", *weights, str(looped / "train"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4
    out = tmp_path / "feats.npz"
    with pytest.warns(UserWarning, match=LINK_WARNING):
        assert main(["features", *weights, str(looped / "train"), "-o", str(out)]) == 0
    with np.load(out) as z:
        assert z["paths"].tolist() == real_images(looped)
    capsys.readouterr()
    with pytest.warns(UserWarning, match=LINK_WARNING):
        assert main(["predict", *weights, str(looped / "train"), "--json"]) == 0
    assert sorted(json.loads(line)["path"] for line in capsys.readouterr().out.splitlines()) == real_images(looped)


def test_links_that_lead_out_of_the_data_set_are_followed(tmp_path):
    store = tmp_path / "store"
    for folder in ("more", "birds"):
        (store / folder).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(store / folder / "a.png")
    Image.new("RGB", (8, 8)).save(store / "b.png")
    data = tmp_path / "data"
    for cls in ("cat", "dog"):
        (data / "train" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(data / "train" / cls / "own.png")
    (data / "train" / "cat" / "more").symlink_to(store / "more")  # a folder elsewhere
    (data / "train" / "dog" / "b.png").symlink_to(store / "b.png")  # a file elsewhere
    (data / "train" / "bird").symlink_to(store / "birds")  # a whole class folder elsewhere
    (store / "more" / "up").symlink_to(store)  # inside the linked folder: a loop above it
    with pytest.warns(UserWarning, match=r"more[/\\]up -> .*store \(a folder above the link: a loop\)"):
        split = read_split(data, "train")
    listed = sorted((split.classes[label], str(path.relative_to(data / "train")))
                    for path, label in zip(split.images, split.labels.tolist()))
    assert listed == [("bird", "bird/a.png"), ("cat", "cat/more/a.png"), ("cat", "cat/own.png"),
                      ("dog", "dog/b.png"), ("dog", "dog/own.png")]


def test_links_inside_the_data_set_to_what_it_already_lists_are_skipped(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / cls / "own.png")
    (tmp_path / "kitten").symlink_to("cat")  # a second name for a class folder
    (tmp_path / "cat" / "dogs").symlink_to(Path("..", "dog"))
    (tmp_path / "cat" / "also.png").symlink_to(Path("..", "dog", "own.png"))
    with pytest.warns(UserWarning, match="not following 3 symbolic link") as caught:
        split = read_split(tmp_path, "test", flat=True)
    message = str(caught[0].message)
    assert "kitten -> " in message and "cat/dogs -> " in message and "also.png -> " in message
    assert [(split.classes[i], p.name) for p, i in zip(split.images, split.labels)] == [("cat", "own.png"),
                                                                                        ("dog", "own.png")]


# --- hf-hub: names ------------------------------------------------------------------------------------------

REPO_IDS = ["timm/resnet50.a1_in1k", "org_1/Name-2.x", "a/b", "timm/" + "r" * 96, "timm/" + "r" * 97, "ti..mm/x",
            "timm/x--y", "timm/.x", "timm/x.", "timm/-x", "timm/x.git", "timm/x y", "timm/x\\y", "timm/é", "_a/_b_"]
REVISIONS = ["main", "v1.0", "refs/pr/1", "refs/convert/parquet", "a" * 40, "0123abc", "x@y", "a/-b", "../x",
             "a/../b", "/main", "main/", "a//b", ".hidden", "a/.b", "v1.lock", "x.", "@", "a@{1}", "a b", "a\tb",
             "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b", "a\x7fb", "../../../../somewhere"]


def test_a_hub_revision_that_climbs_out_of_the_cache_is_refused_before_any_hub_call(monkeypatch):
    import huggingface_hub

    import resnets
    from resnets.errors import BadInput
    from resnets.weights.hub import cached_hub_file

    def no_call(*args, **kwargs):
        raise AssertionError(f"the Hub was called: {args} {kwargs}")

    for function in ("hf_hub_download", "try_to_load_from_cache", "hf_hub_url", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, function, no_call)
    for name, part in [("hf-hub:timm/x@../../../../somewhere", "revision '../../../../somewhere'"),
                       ("hf-hub:timm/x@refs/..%2f/y", "revision 'refs/..%2f/y'"),
                       ("hf-hub:../x@main", "'..' is not a Hugging Face repo"),
                       ("hf-hub:timm/x\\..\\y", "'x\\\\..\\\\y' is not a Hugging Face repo")]:
        with pytest.raises(BadInput, match=re.escape(f"weights {name!r}: {part}")):
            resnets.create_model(weights=name)
        with pytest.raises(BadInput, match=re.escape(part)):
            cached_hub_file(name)


def test_hub_repo_ids_and_revisions_follow_huggingface_and_git():
    """Our check accepts what huggingface_hub's validator and git check-ref-format accept, and no more."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from resnets.errors import BadInput
    from resnets.weights.hub import parse_hub_name

    def accepted(name: str) -> bool:
        try:
            parse_hub_name(name)
        except BadInput:
            return False
        return True

    for repo_id in REPO_IDS:
        try:
            validate_repo_id(repo_id)
            valid = repo_id.isascii()  # the Hub's names are ASCII; its local regex is looser (\w)
        except HFValidationError:
            valid = False
        assert accepted(f"hf-hub:{repo_id}") == valid, repo_id
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    for revision in REVISIONS:
        valid = subprocess.run([git, "check-ref-format", "--allow-onelevel", revision]).returncode == 0
        assert accepted(f"hf-hub:timm/resnet50.a1_in1k@{revision}") == valid, revision
    assert parse_hub_name("hf-hub:timm/resnet50.a1_in1k@refs/pr/1") == ("timm/resnet50.a1_in1k", "refs/pr/1")


# --- a full disk -------------------------------------------------------------------------------------------

PREVIOUS = b"the last good file"


@pytest.fixture()
def dev_full(monkeypatch):
    """``dev_full(path)``: from then on the atomic writer's temporary file for ``path`` is a link to /dev/full,
    where every write fails with ENOSPC as on a full disk."""
    from resnets import atomic

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    targets: set[Path] = set()
    create_temp = atomic._create_temp

    def on_dev_full(path: Path) -> Path:
        tmp = create_temp(path)
        if path in targets:
            tmp.unlink()
            tmp.symlink_to("/dev/full")
        return tmp

    monkeypatch.setattr(atomic, "_create_temp", on_dev_full)

    def fill(path: Path) -> Path:
        path.write_bytes(PREVIOUS)
        targets.add(path)
        return path

    return fill


@pytest.fixture()
def small_disk(tmp_path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a real full disk for writers that write through temporary files of their own
    (safetensors), which /dev/full cannot stand in for. Needs the right to mount (root)."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def assert_kept(error: BaseException, path: Path) -> None:
    from resnets.errors import DiskFull

    assert isinstance(error, DiskFull) and isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert str(error).startswith(f"cannot write {path}: no space left on device (the previous {path.name} is kept")
    assert path.read_bytes() == PREVIOUS
    assert [p.name for p in path.parent.iterdir() if ".tmp" in p.name] == []


@pytest.mark.parametrize("size", [10, 100_000])  # torch's short write says "iostream error" or "unexpected pos"
def test_a_full_disk_under_a_checkpoint_names_it_and_keeps_the_last_one(tmp_path, dev_full, size):
    from resnets.train.checkpoint import save_checkpoint

    path = dev_full(tmp_path / "last.pt")
    with pytest.raises(OSError) as caught:
        save_checkpoint(path, {"state_dict": {"w": torch.zeros(size)}, "step": 3})
    assert_kept(caught.value, path)


def test_a_full_disk_under_an_export_names_it_and_keeps_the_last_one(tmp_path, dev_full):
    """torch's zip writer on a full disk aborted the whole process once the error was handled."""
    import resnets
    from resnets.inference.export import export_program

    path = dev_full(tmp_path / "model.pt2")
    with pytest.raises(OSError) as caught:
        export_program(resnets.create_model("resnet20").eval(), path, torch.randn(2, 3, 32, 32))
    assert_kept(caught.value, path)


@pytest.mark.parametrize("suffix", [".npz", ".npy", ".parquet"])
def test_a_full_disk_under_features_names_the_output_and_keeps_the_work(tmp_path, dev_full, capsys, suffix):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (60 * i, 90, 20)).save(photos / f"{i}.png")
    out = dev_full(tmp_path / f"feats{suffix}")
    command = ["features", "--model", "resnet20", "--weights", "resnet20.cifar10", "--workers", "0", str(photos),
               "-o", str(out)]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert f"error: cannot write {out}: no space left on device (the previous {out.name} is kept" in err
    assert out.read_bytes() == PREVIOUS
    assert len(list((tmp_path / f"feats{suffix}.parts").glob("part-*.npz"))) == 1  # the work waits for a rerun


def test_a_full_disk_under_a_download_names_it_and_keeps_what_arrived(tmp_path, monkeypatch):
    """The download cache writes ``NAME.part`` itself (to resume it), not through the atomic writer."""
    import http.server
    import threading

    from resnets.errors import DiskFull
    from resnets.weights import WeightsEntry, cached_file

    class Serve(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            self.wfile.write(bytes(1 << 20))

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("RESNETS_OFFLINE", raising=False)
    try:
        entry = WeightsEntry(name="resnet18.test", model="resnet18", file_format="torch", sha256="0123abcd",
                             url=f"http://127.0.0.1:{server.server_address[1]}/net-0123abcd.pth")
        (tmp_path / "net-0123abcd.pth.part").symlink_to("/dev/full")
        with pytest.raises(DiskFull, match=re.escape(f"cannot write {tmp_path / 'net-0123abcd.pth'}: no space left "
                                                     "on device (what arrived is kept in net-0123abcd.pth.part")):
            cached_file(entry, tmp_path, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "net-0123abcd.pth").exists()


def test_a_full_disk_under_safetensors_writers_names_the_file(small_disk):
    """Model files, training's weights and the decoded-data cache (safetensors writes its own temporary file)."""
    import resnets
    from resnets.data.source import ArrayImage, ImageList
    from resnets.data.tensors import decode_split
    from resnets.train.checkpoint import save_weights
    from resnets.weights import save_safetensors

    state = resnets.create_model("resnet20").state_dict()  # 1.1 MB, the disk 256 KiB
    for write, name in [(lambda p: save_safetensors(state, p), "model.safetensors"),
                        (lambda p: save_weights(p, state, {"model": "resnet20"}), "best.safetensors")]:
        path = small_disk / name
        path.write_bytes(PREVIOUS)
        with pytest.raises(OSError) as caught:
            write(path)
        assert_kept(caught.value, path)
        assert "os error 28" in str(caught.value)  # safetensors' own words follow ours
    pixels = [ArrayImage(f"img{i}", np.full((3, 64, 64), i, np.uint8)) for i in range(64)]  # 768 KiB decoded
    images = ImageList(pixels, torch.zeros(64, dtype=torch.long), ("a",), small_disk)
    with pytest.raises(OSError, match=f"cannot write {small_disk}.*safetensors: no space left on device "
                                      r"\(nothing was written"):
        decode_split(images, lambda img: torch.from_numpy(np.array(img)).permute(2, 0, 1), "test",
                     cache_dir=small_disk / "cache")


# --- one writer per output ---------------------------------------------------------------------------------


@pytest.fixture()
def other_process() -> Iterator:
    """``other_process(lock)``: a second process holding ``lock`` as a running job does (its pid returned) until
    the test ends."""
    started: list[subprocess.Popen] = []

    def hold(lock: Path) -> int:
        code = ("import pathlib, sys\nfrom resnets.locks import exclusive\n"
                "with exclusive(pathlib.Path(sys.argv[1]), 'busy'):\n    print('held', flush=True)\n    sys.stdin.read()")
        child = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        started.append(child)
        assert child.stdout.readline() == "held\n"
        return child.pid

    yield hold
    for child in started:
        child.communicate(timeout=30)  # closing stdin lets it go


def test_a_second_features_job_on_one_output_fails_at_once_naming_the_first(tmp_path, other_process, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(photos / "a.png")
    out = tmp_path / "feats.npz"
    pid = other_process(tmp_path / "feats.npz.lock")
    command = ["features", "--model", "resnet20", "--weights", "resnet20.cifar10", "--workers", "0", str(photos),
               "-o", str(out)]
    assert main(command) == 1
    assert (f"error: another features job is writing {out} right now; let it finish, or give this one another output "
            f"({out}.lock is held by process {pid})") in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "feats.npz.parts").exists()  # no work done


def test_the_training_lock_names_the_process_that_holds_it(tmp_path, other_process):
    from resnets.errors import BadInput
    from resnets.train.run_folder import run_folder

    pid = other_process(tmp_path / "run" / ".lock")
    with pytest.raises(BadInput, match=re.escape(f"another 'resnets train' is writing to {tmp_path / 'run'} right now;"
                                                 f" give this run another out= folder ({tmp_path / 'run' / '.lock'} "
                                                 f"is held by process {pid})")):
        with run_folder(tmp_path / "run", resume=False, is_main=True):
            pass


def test_a_features_job_releases_its_output(tmp_path):
    """The lock goes with the job: a rerun works, and no lock file is left beside the output."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(photos / "a.png")
    out = tmp_path / "feats.npy"
    command = ["features", "--model", "resnet20", "--weights", "resnet20.cifar10", "--workers", "0", str(photos),
               "-o", str(out)]
    assert main(command) == 0 and main(command) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.npy", "feats.npy.paths.jsonl", "photos"]
