"""The model-file contract, end to end: train -> predict -> eval -> optimize -> export keep the architecture,
the class names and the preprocessing, for every recipe, on a folder whose classes are not CIFAR's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnets
from resnets.classes import CIFAR10_CLASSES
from resnets.cli import main
from resnets.data.source import read_split
from resnets.data.tensors import load_image_tensors
from resnets.evaluate import evaluate
from resnets.data.images import find_images
from resnets.inference.export import exported_entry, run_exported
from resnets.data.batches import file_batches
from resnets.pipeline import Inference, load_inference, run_model
from resnets.preprocess import CIFAR10, Preprocessing
from resnets.weights import read_checkpoint
from resnets.train import make_config, train
from resnets.train.metrics import read_metrics

CLASSES = ("boat", "jet", "kitty")  # sorted, as the trainer numbers class folders


def write_photos(root, n_train: int = 16, n_test: int = 6) -> None:
    """Non-square (40x52) noisy photos, each class tinted in its own channel: resize and crop both matter."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 150, (40, 52, 3), dtype=np.uint8)
                pixels[..., c] += 100
                Image.fromarray(pixels).save(root / split / name / f"{i:02d}.png")
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden: never a class, whatever it holds
    Image.fromarray(pixels).save(root / "train" / ".ipynb_checkpoints" / "00-checkpoint.png")


def run_cli(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["paper-cifar", "fast-cifar", "finetune"])
def test_train_predict_eval_optimize_export_round_trip(tmp_path, capsys, recipe):
    data, run = tmp_path / "data", tmp_path / "run"
    write_photos(data)
    extra = ["--weights", "none"] if recipe == "finetune" else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # finetune from random weights says so
        run_cli(capsys, "train", "--model", "resnet20", "--data", str(data), "--recipe", recipe, "--epochs", "2",
                "--batch-size", "8", "--lr", "0.02", "--out", str(run), "--threads", "1", "--no-progress",
                "--cache-dir", str(tmp_path / "cache"), *extra)
    best = run / "best.safetensors"

    # The file says what it is: architecture, class names in label order, evaluation recipe, metrics.
    entry = read_checkpoint(best).entry
    assert entry.model == "resnet20" and entry.classes == CLASSES and entry.model_kwargs["num_classes"] == 3
    assert (entry.preprocessing.pixel_mean is not None) == (recipe == "paper-cifar")
    assert entry.training["recipe"] == recipe and "test split" in entry.metrics_data

    # predict without --model names the classes the run was trained on
    photo = data / "test" / "kitty" / "00.jpg"
    Image.open(data / "test" / "kitty" / "00.png").convert("RGB").save(photo)
    answer = json.loads(run_cli(capsys, "predict", "--weights", str(best), "--json", "--top", "3", str(photo)))
    assert sorted(p["name"] for p in answer["predictions"]) == list(CLASSES)
    photo.unlink()

    # eval of best.safetensors gives exactly the error the run recorded for that epoch
    row = next(r for r in read_metrics(run) if r["epoch"] == entry.training["epoch"])
    assert row["eval_error"] == entry.training["eval_error"]
    result = json.loads(run_cli(capsys, "eval", "--weights", str(best), str(data), "--json", "--workers", "0"))
    assert result["model"] == "resnet20" and result["images"] == 18
    assert round(result["top1"] * 18 / 100) == round((1 - row["eval_error"]) * 18)

    # optimized int8 (onnxruntime) and the ONNX export keep the class names and agree with eager on top-1
    files = find_images(data / "test")
    eager = load_inference(None, best)
    x = torch.cat([b.images for b, _ in file_batches(files, eager.preprocessing, 32, workers=0)])
    reference = run_model(eager.model, x).argmax(1)
    int8 = load_inference(None, best, "int8", calibration=find_images(data / "train"), backend="onnxruntime")
    assert int8.classes == CLASSES and int8.preprocessing == eager.preprocessing
    assert (run_model(int8.model, x).argmax(1) == reference).float().mean() >= 0.9

    onnx_file = tmp_path / "model.onnx"
    run_cli(capsys, "export", "--weights", str(best), "--format", "onnx", "-o", str(onnx_file))
    assert exported_entry(onnx_file, "onnx").classes == CLASSES
    assert torch.equal(run_exported(onnx_file, x, "onnx").argmax(1), reference)


def test_create_model_and_builders_take_weights_like_torchvision(tmp_path):
    model = resnets.resnet20(weights="resnet20.cifar10")
    assert model.pretrained_cfg.name == "resnet20.cifar10"
    path = tmp_path / "mine.safetensors"
    resnets.weights.save_safetensors(model.state_dict(), path, model.pretrained_cfg)
    again = resnets.create_model(weights=path)  # no name: the file says resnet20
    assert again.pretrained_cfg.classes == CIFAR10_CLASSES
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match=r"are a resnet20 \(recorded in the file\), not a resnet32"):
        resnets.create_model("resnet32", weights=path)
    with pytest.raises(ValueError, match="needs a model name"):
        resnets.create_model(weights=None)
    assert getattr(resnets.resnet20(weights="none"), "pretrained_cfg", None) is None


def test_register_model_refuses_a_taken_name():
    with pytest.raises(ValueError, match="'resnet50' is already registered"):
        resnets.register_model(lambda **kw: None, "resnet50")


def test_unknown_names_suggest_the_closest_and_the_aliases():
    with pytest.raises(ValueError, match=r"did you mean resnet20\.cifar10.*'imagenet' or 'cifar10'.*local file"):
        resnets.create_model("resnet20", weights="resnet20.cifar1O")
    with pytest.raises(ValueError, match="did you mean .*resnet50"):
        resnets.create_model("resnet5O")


def test_train_restores_torch_global_state(tmp_path):
    write_photos(tmp_path / "data", n_train=4, n_test=2)
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    config = make_config("fast-cifar", model="resnet20", data=str(tmp_path / "data"),
                         out=str(tmp_path / "run"), epochs=1, batch_size=4, threads=1,
                         deterministic=True, precision="fp32", progress=False,
                         cache_dir=str(tmp_path / "cache"))
    train(config)
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.get_rng_state(), rng)


def test_no_import_cycles():
    tool = Path(__file__).resolve().parents[2] / "shared" / "tools" / "import_cycles.py"
    if not tool.is_file():
        pytest.skip("shared/tools/import_cycles.py not available")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(tool), "src", "resnets"], cwd=root, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "cycles 0", out.stdout


class _Sizes(torch.nn.Module):
    """Records the input sizes it is given; predicts class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, int]] = set()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add(tuple(x.shape[-2:]))
        return torch.zeros(len(x), 3).index_fill_(1, torch.tensor([0]), 1.0)


def test_eval_of_a_tar_decodes_at_the_models_recorded_preprocessing(tmp_path):
    write_photos(tmp_path / "data", n_train=1, n_test=2)
    with tarfile.open(tmp_path / "test.tar", "w") as tar:
        tar.add(tmp_path / "data" / "test", arcname="test")
    recipe = Preprocessing(CIFAR10.mean, CIFAR10.std, resize_size=72, crop_size=64)
    model = _Sizes()
    inf = Inference(model, recipe, CLASSES, "sizes", None)
    acc = evaluate(inf, tmp_path / "test.tar", workers=0, progress=False)
    assert model.seen == {(64, 64)} and acc.images == 6 and acc.top1 == pytest.approx(100 / 3)
    assert evaluate(inf, tmp_path / "data", workers=0, progress=False).top1 == acc.top1  # the folder: same answer


def test_a_bad_image_is_listed_not_fatal_when_decoding_into_memory(tmp_path, capsys):
    write_photos(tmp_path / "data", n_train=4, n_test=2)
    bad = tmp_path / "data" / "train" / "jet" / "01.png"
    bad.write_bytes(b"not an image")
    images = read_split(tmp_path / "data", "train")
    assert len(images) == 12  # the hidden .ipynb_checkpoints/ folder is not a class
    data = load_image_tensors(tmp_path / "data", "train", cache_dir=tmp_path / "cache")
    assert len(data) == 11 and data.classes == CLASSES
    assert f"{bad}: not an image file" in capsys.readouterr().err


def test_random_weights_everywhere_and_small_folders_suggest_a_batch_size(tmp_path, capsys):
    write_photos(tmp_path / "data", n_train=2, n_test=1)
    photo = tmp_path / "data" / "test" / "jet" / "00.png"
    out = run_cli(capsys, "predict", "--model", "resnet20", "--weights", "none", "--json", "--top", "1", str(photo))
    assert json.loads(out)["predictions"][0]["name"] in CIFAR10_CLASSES  # random CIFAR net: CIFAR-10 names
    with pytest.raises(ValueError, match=r"6 training images are fewer than one batch of 128: use a smaller "
                                         r"batch_size=, at most 6"):
        train(make_config("fast-cifar", model="resnet20", data=str(tmp_path / "data"), out=str(tmp_path / "run"),
                          progress=False, cache_dir=str(tmp_path / "cache")))


def test_a_weights_file_from_before_the_contract_still_loads_with_its_classes(tmp_path):
    """``resnets train`` used to write its own metadata keys; such run folders keep working without --model."""
    from safetensors.torch import save_file

    model = resnets.create_model("resnet20", num_classes=3)
    old = {"model": "resnet20", "classes": json.dumps(list(CLASSES)), "recipe": "fast-cifar", "normalize": "channel",
           "mean": json.dumps(list(CIFAR10.mean)), "std": json.dumps(list(CIFAR10.std)), "epoch": "3", "step": "30"}
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=old)
    loaded = resnets.create_model(weights=path)
    assert loaded.pretrained_cfg.classes == CLASSES and loaded.pretrained_cfg.preprocessing == CIFAR10
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bad),
              metadata={"resnets.weights_entry": '{"name": "x", "model": "resnet20", "classes": 3}'})
    with pytest.raises(ValueError, match=r"bad\.safetensors: damaged resnets metadata: missing field\(s\) preprocessing"):
        resnets.create_model(weights=bad)


def test_runs_are_never_overwritten_or_shared_and_bad_options_are_named(tmp_path, capsys):
    write_photos(tmp_path / "data", n_train=4, n_test=2)
    values = dict(model="resnet20", data=str(tmp_path / "data"), out=str(tmp_path / "run"), epochs=1, batch_size=4,
                  precision="fp32", threads=1, progress=False, cache_dir=str(tmp_path / "cache"))
    train(make_config("fast-cifar", **values))
    before = (tmp_path / "run" / "metrics.csv").read_text()
    with pytest.raises(ValueError, match=r"already holds a training run .* resume=True"):
        train(make_config("fast-cifar", **values))
    assert (tmp_path / "run" / "metrics.csv").read_text() == before
    capsys.readouterr()
    train(make_config("fast-cifar", **values, resume=True))
    assert "has finished its 1 epoch; nothing to train. To train it further, resume it with a longer run (epochs=N" \
        in capsys.readouterr().out

    import fcntl

    with open(tmp_path / "run" / ".lock", "a+") as lock:  # another process holds the run folder
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another 'resnets train' is writing to"):
            train(make_config("fast-cifar", **values, resume=True))
    with pytest.raises(ValueError, match=r"is a run of resnet20, not resnet32"):
        train(make_config("fast-cifar", **{**values, "model": "resnet32"}, resume=True))
    for bad, message, flags in (
            (dict(batch_size=0), "batch_size= must be a positive integer, got 0", ["--batch-size", "0"]),
            (dict(epochs=-1), "epochs= must be a positive integer, got -1", ["--epochs=-1"]),
            (dict(freeze="backbone"), "freeze='backbone' .* give weights=", ["--freeze", "backbone"]),
            (dict(precision="fp16"), "precision='fp16' is for CUDA GPUs.* use precision='bf16'", ["--precision", "fp16"])):
        with pytest.raises(ValueError, match=message):  # Python names its arguments, the command line its flags
            train(make_config("fast-cifar", **{**values, "out": str(tmp_path / "other"), **bad}))
        code = main(["train", "--model", "resnet20", "--data", values["data"], "--out", str(tmp_path / "other"),
                     "--epochs", "1", "--batch-size", "4", "--threads", "1", "--no-progress", *flags])
        said = capsys.readouterr().err
        assert code != 0 and flags[0].split("=")[0] in said and "=" not in said.split("error:", 1)[1], said


def test_bad_weights_files_are_named_with_their_cause(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.touch()
    with pytest.raises(ValueError, match=r"empty\.pth: empty file \(0 bytes\)"):
        resnets.create_model("resnet20", weights=empty)
    state = resnets.create_model("resnet20").state_dict()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(ValueError, match=r"nan\.pth.*layer2\.0\.conv1\.weight holds NaN"):
        resnets.create_model("resnet20", weights=tmp_path / "nan.pth")
    with pytest.raises(ValueError, match=r"nan\.pth: the converted file would not load"):
        resnets.weights.convert_to_safetensors(tmp_path / "nan.pth", tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()


def test_find_images_follows_folder_links_once_and_names_what_it_cannot_read(tmp_path, monkeypatch):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "elsewhere" / "b.png")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "photos" / "loop").symlink_to(tmp_path / "photos")
    assert find_images(tmp_path / "photos") == [tmp_path / "photos" / "linked" / "b.png"]
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="dangling: a symbolic link that points nowhere"):
        find_images(tmp_path / "dangling")
    with pytest.raises(TypeError, match="load_img takes a file path or a binary file object, got int"):
        resnets.load_img(3)

    real_scandir = os.scandir

    def locked(path):  # a sub-folder without read permission (tests run as root, where chmod cannot show it)
        if str(path).endswith("linked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", locked)
    with pytest.warns(UserWarning, match=r"skipping folder .*linked: cannot read it \(Permission denied\)"):
        assert find_images(tmp_path / "photos") == []


def test_metadata_with_an_impossible_architecture_is_named(tmp_path):
    from safetensors.torch import save_file

    entry = json.loads(resnets.resnet20(weights="resnet20.cifar10").pretrained_cfg.to_json())
    entry["model_kwargs"] = {"?hortcut": "A"}  # one of the fuzz test's mutations
    path = tmp_path / "odd.safetensors"
    save_file({k: v.contiguous() for k, v in resnets.create_model("resnet20").state_dict().items()}, str(path),
              metadata={"resnets.weights_entry": json.dumps(entry)})
    with pytest.raises(ValueError, match=r"odd\.safetensors: cannot build resnet20 .*'\?hortcut'"):
        resnets.create_model(weights=path)


def test_features_keep_odd_file_names_aligned_save_often_and_list_errors_when_all_fail(tmp_path, monkeypatch):
    from resnets import features as features_module

    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["two\nlines.png", "tab\there.png", os.fsdecode(b"latin-\xe9.png"), "plain.png"]
    for name in names:
        Image.new("RGB", (32, 32), (len(name) * 9 % 255, 40, 90)).save(folder / name)
    inf = load_inference("resnet20", "resnet20.cifar10", features=("avg", None))
    paths = find_images(folder)
    run = features_module.extract_features(inf, paths, tmp_path / "f.npy", batch_size=2, workers=0, progress=False)
    rows = [json.loads(r) for r in (tmp_path / "f.npy.paths.jsonl").read_text().splitlines()]
    assert rows == [str(p) for p in paths] and len(rows) == run.images == 4
    with pytest.raises(ValueError, match=r"latin-.*not valid UTF-8 .* Parquet"):
        features_module.extract_features(inf, paths, tmp_path / "f.parquet", workers=0, progress=False)

    clock = iter(range(0, 1000, 11))  # every batch is 11 s after the last: each batch becomes a shard
    monkeypatch.setattr(features_module.time, "monotonic", lambda: next(clock))
    calls = {"n": 0}

    def interrupt(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_run(*args)

    real_run = features_module.run_model
    monkeypatch.setattr(features_module, "run_model", interrupt)
    with pytest.raises(KeyboardInterrupt):
        features_module.extract_features(inf, paths, tmp_path / "g.npz", batch_size=2, workers=0, progress=False)
    assert len(list((tmp_path / "g.npz.parts").glob("part-*.npz"))) == 1  # the first batch was kept

    for p in paths:
        p.write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"none of the 4 images could be read; their errors are in .*h\.npz\.errors"):
        features_module.extract_features(inf, paths, tmp_path / "h.npz", workers=0, progress=False)
    assert len((tmp_path / "h.npz.errors.tsv").read_text().splitlines()) == 5


def test_keras_arguments_out_of_range_are_named():
    with pytest.raises(ValueError, match="num_classes must be a non-negative int .* got -1"):
        resnets.ResNet50(weights=None, classes=-1)
    with pytest.raises(ValueError, match=r"drop_rate \(Keras' dropout_rate\) must lie in \[0, 1\), got 2.0"):
        resnets.ResNet50(weights=None, dropout_rate=2.0)


def test_resuming_a_missing_run_says_so(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", "--out", str(tmp_path / "nothing")])
    assert e.value.code == 2
