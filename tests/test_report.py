"""``resnets eval --report``: its numbers against scikit-learn, torchmetrics and a hand computation from the
network's own logits, the class-subset evaluation, and the page in a real headless Chromium."""

from __future__ import annotations

import html
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, classification_report, confusion_matrix, log_loss
from torchmetrics.classification import MulticlassCalibrationError

import resnets
from resnets.classes import CIFAR10_CLASSES
from resnets.cli import main
from resnets.errors import MissingExtra
from resnets.evaluate import evaluate
from resnets.pipeline import load_inference
from resnets.report import class_scores, confusion_matrix as our_confusion_matrix

from test_calibration import cifar_jpegs, reference_logits

SUBSET = ("cat", "dog", "truck")  # CIFAR-10 classes 3, 5 and 9


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return resnets.resnet20(weights="resnet20.cifar10").eval()


def run_eval(capsys, data: Path, report: Path, *more: str) -> dict:
    capsys.readouterr()
    assert main(["eval", "--weights", "resnet20.cifar10", str(data), "--workers", "0", "--no-progress",
                 "--report", str(report), "--json", *more]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"] == str(report / "report.html")
    return json.loads((report / "report.json").read_text())


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Path, Path]:
    """60 CIFAR-10 test JPEGs (6 per class) and the folder its report goes to."""
    root = tmp_path_factory.mktemp("full")
    return cifar_jpegs(root / "data", {"test": 6}), root / "report"


def truth(data: Path, model: torch.nn.Module, classes=CIFAR10_CLASSES):
    """(paths, labels in ``classes``, logits of every CIFAR-10 class) by hand."""
    paths = sorted((data / "test").rglob("*.jpg"))
    return paths, np.array([classes.index(p.parent.name) for p in paths]), reference_logits(paths, model).double()


def test_report_numbers_equal_scikit_learn_and_torchmetrics(full, model, capsys):
    data, out = full
    report = run_eval(capsys, data, out)
    paths, labels, logits = truth(data, model)
    probs = logits.softmax(1)
    predicted = probs.argmax(1).numpy()
    names = list(CIFAR10_CLASSES)
    assert report["images"] == 60 and report["subset"] is None
    assert report["top1"] == pytest.approx(100 * np.mean(predicted == labels), abs=1e-3)
    assert report["confusion_matrix"]["classes"] == names
    assert report["confusion_matrix"]["rows_true_columns_predicted"] == confusion_matrix(labels, predicted).tolist()
    sk = classification_report(labels, predicted, labels=range(10), target_names=names, output_dict=True,
                               zero_division=0)
    for row in report["per_class"]:
        assert row == pytest.approx({"class": row["class"], **sk[row["class"]]}, abs=1e-9)
    for ours, theirs in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        assert report[ours] == pytest.approx({k: v for k, v in sk[theirs].items() if k != "support"}, abs=1e-9)
    assert report["nll"] == pytest.approx(log_loss(labels, probs, labels=range(10)), abs=1e-5)
    assert report["brier"] == pytest.approx(brier_score_loss(labels, probs, labels=range(10)), abs=1e-5)
    y = torch.from_numpy(labels)
    for key, norm in (("ece", "l1"), ("mce", "max")):
        reference = MulticlassCalibrationError(num_classes=10, n_bins=15, norm=norm)(probs.float(), y)
        assert report[key] == pytest.approx(float(reference), abs=1e-5)  # float32 inputs, as nll and brier above
    assert sum(report["reliability"]["count"]) == 60
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probs.max(1).values.numpy()[wrong], kind="stable")][:16]
    assert [w["image"] for w in report["most_confidently_wrong"]] == [str(paths[i]) for i in worst]
    assert [w["predicted"] for w in report["most_confidently_wrong"]] == [names[predicted[i]] for i in worst]
    assert {p.name for p in out.iterdir()} == {"report.json", "report.html", "confusion_matrix.png",
                                               "reliability.png", "confidently_wrong.png"}


def test_class_scores_equal_scikit_learn_with_empty_rows_and_columns():
    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 6, 300), rng.integers(0, 6, 300)
    labels[labels == 4] = 0  # class 4: no support
    predicted[predicted == 2] = 1  # class 2: never predicted
    cm = our_confusion_matrix(torch.from_numpy(predicted), torch.from_numpy(labels), 7)  # class 6: neither
    assert cm.tolist() == confusion_matrix(labels, predicted, labels=range(7)).tolist()
    ours = class_scores(cm)
    sk = classification_report(labels, predicted, labels=range(7), output_dict=True, zero_division=0)
    assert [r["support"] for r in ours["per_class"]] == [sk[str(i)]["support"] for i in range(7)]
    for i, row in enumerate(ours["per_class"]):
        assert row == pytest.approx(sk[str(i)], abs=1e-12)
    for ours_key, sk_key in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        assert ours[ours_key] == pytest.approx({k: v for k, v in sk[sk_key].items() if k != "support"}, abs=1e-12)


def test_a_data_set_with_some_of_the_models_classes_is_scored_over_those_only(tmp_path, model, capsys):
    data = cifar_jpegs(tmp_path / "data", {"test": 10}, SUBSET)
    report = run_eval(capsys, data, tmp_path / "report")
    paths, labels, logits = truth(data, model, SUBSET)
    kept = logits[:, [CIFAR10_CLASSES.index(c) for c in SUBSET]]  # by hand: the subset's logits alone
    hand_top1 = 100 * np.mean(kept.argmax(1).numpy() == labels)
    assert hand_top1 != 100 * np.mean(logits.argmax(1).numpy() == np.array([CIFAR10_CLASSES.index(SUBSET[i])
                                                                             for i in labels]))  # it matters here
    assert report["top1"] == pytest.approx(hand_top1, abs=1e-3)
    assert report["top5"] is None  # three classes: all in the top five, so no top-5 is claimed
    capsys.readouterr()
    assert main(["eval", "--weights", "resnet20.cifar10", str(data), "--workers", "0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and "top-5" not in printed
    assert (report["classes"], report["model_classes"]) == (3, 10)
    assert report["nll"] == pytest.approx(float(-kept.log_softmax(1)[range(len(labels)), labels].mean()), abs=1e-5)
    assert [r["class"] for r in report["per_class"]] == list(SUBSET)
    assert "3 of the model's 10 classes" in report["subset"]
    assert html.escape(report["subset"]) in (tmp_path / "report" / "report.html").read_text()
    assert main(["eval", "--weights", "resnet20.cifar10", str(data), "--workers", "0", "--no-progress"]) == 0
    assert "over the data's 3 of the model's 10 classes" in capsys.readouterr().out
    # The same from Python, weights by name, as the CLI takes them.
    acc = resnets.evaluate("resnet20.cifar10", data, workers=0, progress=False)
    assert acc.top1 == pytest.approx(hand_top1, abs=1e-3) and acc.top5 is None and acc.subset


def test_no_matplotlib_is_a_missing_extra_before_any_image_is_read(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    inf = load_inference(None, "resnet20.cifar10")
    with pytest.raises(MissingExtra, match=r"resnets\[plot\]"):
        evaluate(inf, tmp_path / "not there", report=tmp_path / "report")
    assert main(["eval", "--weights", "resnet20.cifar10", str(tmp_path / "not there"), "--report",
                 str(tmp_path / "r")]) == 1
    assert "pip install 'resnets[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_eval_help_documents_the_report(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--report DIR", "report.html", "ECE", "reliability diagram", "confusion matrix", "--wrong N",
                  "subset of the model's"):
        assert words in text


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.slow  # a headless browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_page_opens_from_disk_and_its_pictures_load(full, model, capsys):
    sync_api = pytest.importorskip("playwright.sync_api")
    data, out = full
    if not (out / "report.html").exists():
        run_eval(capsys, data, out)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            fetched: list[str] = []
            page.on("request", lambda r: fetched.append(r.url))
            page.goto((out / "report.html").as_uri())
            page.wait_for_load_state("load")
            widths = page.locator("img").evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) == 3 and all(w > 100 for w in widths)
            assert page.locator("h1").inner_text() == "Evaluation report"
            assert page.locator("table").nth(2).locator("tr").count() == 1 + 10 + 2  # header, classes, averages
            assert all(url.startswith(("file:", "data:")) for url in fetched), fetched
        finally:
            browser.close()
