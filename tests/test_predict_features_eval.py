"""predict, features and eval from the command line, against published accuracy and an independent path."""

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnets
from resnets import features as features_module
from resnets.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared"
CKPT = SHARED / "weights" / "cifar10"
TEST_TAR = SHARED / "data" / "cifar10-jpeg" / "test.tar"
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

needs_shared = pytest.mark.skipif(not TEST_TAR.exists(), reason="shared CIFAR-10 data not present")


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory) -> Path:
    """60 real CIFAR-10 test JPEGs (6 per class) in test/<class>/, plus the class order."""
    root = tmp_path_factory.mktemp("cifar")
    with tarfile.open(TEST_TAR) as tar:
        taken: dict[str, int] = {}
        for member in tar:
            if not member.isfile():
                continue
            cls = member.name.split("/")[-2]
            if taken.get(cls, 0) >= 6:
                continue
            taken[cls] = taken.get(cls, 0) + 1
            dest = root / "test" / cls / Path(member.name).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tar.extractfile(member).read())
            if len(taken) == 10 and all(v >= 6 for v in taken.values()):
                break
    return root


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory) -> Path:
    """One decoded-data cache for the module, so test.tar is decoded only once."""
    return tmp_path_factory.mktemp("cache")


def reference_logits(paths, checkpoint: Path) -> np.ndarray:
    """The publisher's recipe by hand: RGB in [0, 1], ImageNet mean/std, no resize (32x32 inputs)."""
    model = resnets.resnet20().eval()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("module.").replace("linear.", "fc."): v for k, v in state.items()})
    x = np.stack([(np.asarray(Image.open(p).convert("RGB"), np.float64) / 255 - MEAN) / STD for p in paths])
    with torch.no_grad():
        return model(torch.from_numpy(x).permute(0, 3, 1, 2).float()).numpy()


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("depth, published", [(20, 81.03), pytest.param(32, 82.56, marks=pytest.mark.exhaustive)])
def test_eval_reproduces_the_checkpoints_accuracy_on_the_jpeg_test_set(depth, published, capsys, data_cache,
                                                                          monkeypatch):
    monkeypatch.setenv("RESNETS_CACHE", str(data_cache))
    (ckpt,) = CKPT.glob(f"resnet{depth}-*.th")
    assert main(["eval", "--model", f"resnet{depth}", "--weights", str(ckpt), str(TEST_TAR), "--json",
                 "--batch-size", "500"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 10_000
    assert abs(result["top1"] - published) <= 0.05  # "to within a few images"


@needs_shared
def test_eval_on_an_image_folder_matches_the_reference(cifar_folder, capsys):
    ckpt = next(CKPT.glob("resnet20-*.th"))
    assert main(["eval", "--model", "resnet20", "--weights", str(ckpt), str(cifar_folder), "--json",
                 "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    paths = sorted((cifar_folder / "test").rglob("*.jpg"))
    labels = [resnets.classes.CIFAR10_CLASSES.index(p.parent.name) for p in paths]
    expected = 100 * np.mean(reference_logits(paths, ckpt).argmax(1) == np.array(labels))
    assert result["images"] == 60 and result["top1"] == pytest.approx(expected, abs=1e-3)


@needs_shared
def test_predict_json_lists_every_file_and_reports_bad_ones(cifar_folder, tmp_path, capsys):
    ckpt = next(CKPT.glob("resnet20-*.th"))
    folder = tmp_path / "imgs"
    shutil.copytree(cifar_folder / "test" / "cat", folder)
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    code = main(["predict", "--model", "resnet20", "--weights", str(ckpt), "--json", "--top", "3",
                 "--workers", "1", str(folder)])
    captured = capsys.readouterr()
    assert code == 1  # one file could not be read
    assert "broken.jpg" in captured.err
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert len(rows) == 7
    good = sorted((r for r in rows if "predictions" in r), key=lambda r: r["path"])
    assert [r["path"] for r in rows if "error" in r] == [str(folder / "broken.jpg")]
    logits = reference_logits([r["path"] for r in good], ckpt)
    probs = torch.from_numpy(logits).softmax(1).numpy()
    for row, p in zip(good, probs):
        top = np.argsort(-p)[:3]
        assert [d["name"] for d in row["predictions"]] == [resnets.classes.CIFAR10_CLASSES[i] for i in top]
        assert [d["probability"] for d in row["predictions"]] == pytest.approx(p[top].tolist(), abs=1e-4)


@needs_shared
def test_features_match_the_reference_and_list_bad_files(cifar_folder, tmp_path, capsys):
    ckpt = next(CKPT.glob("resnet20-*.th"))
    folder = tmp_path / "imgs"
    shutil.copytree(cifar_folder / "test" / "dog", folder)
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "feats.npz"
    assert main(["features", "--model", "resnet20", "--weights", str(ckpt), "--workers", "0", str(folder),
                 "-o", str(out)]) == 0
    with np.load(out) as z:
        feats, paths = z["features"], z["paths"].tolist()
    assert feats.shape == (6, 64) and paths == sorted(str(p) for p in folder.glob("*.jpg"))
    model = resnets.create_model("resnet20", weights=ckpt).eval()
    x = np.stack([(np.asarray(Image.open(p), np.float64) / 255 - MEAN) / STD for p in paths])
    with torch.no_grad():
        ref = model.forward_head(model.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2).float()),
                                 pre_logits=True)
    np.testing.assert_allclose(feats, ref.numpy(), atol=1e-5)
    errors = (tmp_path / "feats.npz.errors.tsv").read_text().splitlines()
    assert len(errors) == 2 and errors[1].startswith(str(folder / "empty.png"))
    assert not (tmp_path / "feats.npz.parts").exists()


@needs_shared
def test_features_resume_after_interruption_without_redoing_work(cifar_folder, tmp_path, monkeypatch):
    folder = cifar_folder / "test"
    paths = resnets.data.find_images(folder)
    inf = resnets.pipeline.load_inference("resnet20", None, features=("max", 2))
    torch.manual_seed(0)
    calls = {"n": 0}
    real_run = features_module.run_model

    def dying_run(model, images):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_run(model, images)

    monkeypatch.setattr(features_module, "run_model", dying_run)
    out = tmp_path / "f.npy"
    with pytest.raises(KeyboardInterrupt):
        features_module.extract_features(inf, paths, out, batch_size=10, workers=0, shard_size=10, progress=False)
    assert not out.exists() and len(list((tmp_path / "f.npy.parts").glob("part-*.npz"))) == 3

    calls["n"] = -100
    run = features_module.extract_features(inf, paths, out, batch_size=10, workers=0, shard_size=10, progress=False)
    assert run.resumed == 30 and calls["n"] == -100 + 3  # only the 30 missing images were computed
    resumed = np.load(out)
    assert resumed.shape == (60, 32)  # stage 2 of ResNet-20 has 32 channels
    rows = (tmp_path / "f.npy.paths.jsonl").read_text().splitlines()
    assert [json.loads(r) for r in rows] == [str(p) for p in paths]

    fresh = features_module.extract_features(inf, paths, tmp_path / "g.npy", batch_size=7, workers=0,
                                             progress=False)
    np.testing.assert_allclose(np.load(fresh.out), resumed, atol=1e-6)


def test_features_refuse_to_mix_with_another_jobs_parts(tmp_path):
    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(img)
    inf = resnets.pipeline.load_inference("resnet20", None, features=("avg", None))
    parts = tmp_path / "f.npz.parts"
    parts.mkdir()
    (parts / "meta.json").write_text(json.dumps({"job": {"model": "resnet56"}, "files": 1}))
    with pytest.raises(ValueError, match="different job"):
        features_module.extract_features(inf, [img], tmp_path / "f.npz", workers=0, progress=False,
                                         job={"model": "resnet20"})


def test_int8_calibrates_on_the_users_images(tmp_path, monkeypatch):
    """Quantization scales come from the images being classified, preprocessed like them, not from zeros."""
    import resnets.inference as inference

    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (32, 32), (40 * i, 200, 10)).save(paths[-1])
    seen = {}

    def fake_optimize(model, precision, example_inputs=None, calibration=None, **options):
        seen["calibration"] = calibration
        return model

    monkeypatch.setattr(inference, "optimize", fake_optimize)
    inf = resnets.pipeline.load_inference("resnet20", None, precision="int8", calibration=paths)
    (batch,) = seen["calibration"]
    expected = torch.stack([inf.preprocessing(Image.open(p)) for p in paths])
    assert torch.equal(batch, expected)


def test_eval_int8_requires_calibration_images(capsys):
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["eval", "--model", "resnet20", "--weights", "x.th", "--precision", "int8", "data"]))
    assert e.value.code == 2 and "--calibration" in capsys.readouterr().err


def test_features_parquet_output_holds_paths_and_vectors(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (36, 36), (80 * i, 30, 200)).save(paths[-1])
    inf = resnets.pipeline.load_inference("resnet20", None, features=("avg", None))
    run = features_module.extract_features(inf, paths, tmp_path / "f.parquet", workers=0, progress=False)
    table = pq.read_table(run.out).to_pydict()
    assert table["path"] == [str(p) for p in paths]
    with torch.no_grad():
        expected = inf.model(torch.stack([inf.preprocessing(Image.open(p)) for p in paths]))
    np.testing.assert_allclose(np.array(table["features"]), expected.numpy(), atol=1e-6)


def test_features_layer_out_of_range_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"stage must lie in 1..3, got 5"):
        resnets.pipeline.load_inference("resnet20", None, features=("avg", 5))


def test_an_optimized_softmax_headed_model_gives_the_eager_probabilities(tmp_path):
    """A Keras-style head that ends in softmax: predict and flip-TTA eval give its probabilities as they are,
    eager or through another engine (whose wrapper has no classifier_activation of its own), never a second
    softmax."""
    pytest.importorskip("onnxruntime")
    from resnets.evaluate import predict_scores
    from resnets.pipeline import load_inference
    from resnets.predict import predict_files

    torch.manual_seed(0)
    src = Path(__file__).resolve().parents[1] / "examples" / "images"
    photos = sorted(src.glob("cifar10_*.jpg"))
    runs = [load_inference("resnet20", None, backend=b, device="cpu", classifier_activation="softmax")
            for b in (None, "onnxruntime")]
    assert not hasattr(runs[1].model, "classifier_activation")  # an engine's wrapper, not the network
    state = runs[0].model.state_dict()
    answers = []
    for inf in runs:
        inf.network.load_state_dict(state)
        if inf.backend != "eager":
            inf.model = inf.optimized(inf.network)  # the same weights through the engine
        answers.append([p.top for p in predict_files(inf, photos, top=3, batch_size=4, workers=0)])
        x = torch.stack([inf.preprocessing(resnets.load_img(p)) for p in photos])
        scores = predict_scores(inf, x, "flip")
        assert torch.allclose(scores.sum(1), torch.ones(len(photos)), atol=1e-5)
    for eager, engine in zip(*answers):
        assert [c for c, _, _ in eager] == [c for c, _, _ in engine]
        np.testing.assert_allclose([p for *_, p in eager], [p for *_, p in engine], atol=1e-4)
    with torch.inference_mode():
        direct = runs[0].network(torch.stack([runs[0].preprocessing(resnets.load_img(photos[0]))]))[0]
    assert answers[0][0][0][2] == pytest.approx(direct.max().item(), abs=1e-6)  # the head's softmax, once
