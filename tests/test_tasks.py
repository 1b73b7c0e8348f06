"""The task table: lookup, reading every file layout from the real data, and metrics."""
import math
import shutil

import pytest

from src.errors import UserError
from src.tasks import TASKS, InputExample, compute_metrics, get_task, read_examples


def test_get_task_is_case_insensitive_and_knows_mnli_mm():
    assert get_task("sst-2") is get_task("SST-2") is TASKS["sst-2"]
    assert get_task("mnli-mm") is get_task("MNLI")


def test_unknown_task_is_named():
    with pytest.raises(UserError, match="'sst-3'"):
        get_task("sst-3")


# (task, split, count, first example: text_a start, text_b start or None, label) from data/k-shot/TASK/16-13
KSHOT = [
    ("SST-2", "train", 32, "nothing happens , and it", None, "0"),
    ("SST-2", "test", 872, "one long string of cliches", None, "0"),
    ("sst-5", "train", 80, "what 's surprising about this", None, "3"),
    ("sst-5", "test", 2210, "no movement , no yuks", None, "1"),
    ("mr", "dev", 32, "the movie's plot is almost", None, "0"),
    ("cr", "test", 2000, "weaknesses are minor : the feel", None, "0"),
    ("mpqa", "train", 32, "they can not be trusted", None, "0"),
    ("subj", "test", 2000, "smart and alert , thirteen", None, "0"),
    ("trec", "train", 96, "What 2th-century American poet", None, "3"),
    ("trec", "test", 500, "How far is it from Denver", None, "5"),
    ("CoLA", "train", 32, "Bill seems to be obnoxious", None, "0"),
    ("CoLA", "test", 1043, "The sailors rode the breeze", None, "1"),
    ("MNLI", "train", 48, "Price caps may sound", "Rate cases make price caps", "entailment"),
    ("MNLI", "dev", 48, "Did you ", "Did you open the poison", None),
    ("SNLI", "train", 48, "The girl sitting by a rock", "a girl wears black", None),
    ("QNLI", "test", 5463, "What came into force", "As of that day, the new", "entailment"),
    ("RTE", "train", 32, "Reagan was seriously wounded", "Reagan survived an attempted", "entailment"),
    ("RTE", "test", 277, "Dana Reeve, the widow", "Christopher Reeve had an accident.", "not_entailment"),
    ("MRPC", "train", 32, "The court 's 1992 decision", "In a 1992 case , the Supreme", "1"),
    ("MRPC", "test", 408, "He said the foodservice pie", '" The foodservice pie business', "1"),
    ("QQP", "train", 32, "Can I develope mobile apps", "How can I develop mobile apps", "1"),
    ("STS-B", "train", 32, "sheep standing in afield.", "A sheep grazing in a field.", 3.2),
    ("STS-B", "test", 1500, "A man with a hard hat is dancing.", "A man wearing a hard hat", 5.0),
]


@pytest.mark.parametrize("name, split, count, text_a, text_b, label", KSHOT, ids=[f"{k[0]}-{k[1]}" for k in KSHOT])
def test_read_kshot_files(name, split, count, text_a, text_b, label, data_root):
    examples = read_examples(get_task(name), data_root / "k-shot" / name / "16-13", split)
    assert len(examples) == count
    first = examples[0]
    assert isinstance(first, InputExample)
    assert first.text_a.startswith(text_a)
    assert (first.text_b is None) if text_b is None else first.text_b.startswith(text_b)
    if label is not None:
        assert first.label == label
    assert all(e.label in get_task(name).labels for e in examples) or get_task(name).regression


@pytest.mark.parametrize("name, split, count", [
    ("SST-2", "train", 6920), ("SST-2", "dev", 872), ("CoLA", "train", 8551), ("MRPC", "train", 3668),
    ("STS-B", "dev", 1500), ("RTE", "train", 2490), ("QNLI", "dev", 5463), ("trec", "train", 5452),
    ("sst-5", "train", 8544), ("subj", "test", 2000),
])
def test_read_original_files(name, split, count, data_root):
    assert len(read_examples(name, data_root / "original" / name, split)) == count


def test_every_task_reads_its_kshot_train_file(data_root):
    for task in TASKS.values():
        examples = read_examples(task, data_root / "k-shot" / task.name / "16-13", "train")
        expected = 16 * (2 if task.regression else len(task.labels))  # K=16 per class; STS-B: 2 bins
        assert len(examples) == expected
        assert all((e.text_b is not None) == task.two_sentences for e in examples)


def test_stsb_labels_are_floats(data_root):
    examples = read_examples("STS-B", data_root / "k-shot" / "STS-B" / "16-13", "dev")
    assert all(isinstance(e.label, float) and 0.0 <= e.label <= 5.0 for e in examples)


def test_mnli_mismatched_test_split(data_root, tmp_path):
    kshot = data_root / "k-shot" / "MNLI" / "16-13"
    with pytest.raises(UserError, match="test_mismatched.tsv"):
        read_examples("MNLI", kshot, "test-mm")
    shutil.copy(kshot / "dev_matched.tsv", tmp_path / "test_mismatched.tsv")
    examples = read_examples("MNLI", tmp_path, "test-mm")
    assert len(examples) == 48 and examples[0].guid == "test-mm-2"
    with pytest.raises(UserError, match="test-mm"):
        read_examples("SST-2", tmp_path, "test-mm")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "train.tsv")):
        read_examples("SST-2", tmp_path, "train")


def test_bad_label_and_short_row_are_located(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t7\n")
    with pytest.raises(UserError, match=r"train.tsv:3: label '7'"):
        read_examples("SST-2", tmp_path, "train")
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nno label column\n")
    with pytest.raises(UserError, match=r"train.tsv:2: 1 columns"):
        read_examples("SST-2", tmp_path, "train")


def test_csv_text_is_kept_verbatim(tmp_path):
    (tmp_path / "train.csv").write_text('1,"a, quoted text"\n0,NA\n1, \n')
    examples = read_examples("mr", tmp_path, "train")
    assert [(e.text_a, e.label) for e in examples] == [("a, quoted text", "1"), ("NA", "0"), (" ", "1")]


# -- metrics, against values computed by hand ------------------------------------------------------

PREDICTIONS, LABELS = [0, 1, 1, 0], [0, 1, 0, 0]  # TP 1, TN 2, FP 1, FN 0


@pytest.mark.parametrize("name, expected", [
    ("SST-2", {"acc": 0.75}),
    ("CoLA", {"acc": 0.75, "mcc": 2 / math.sqrt(12)}),   # (1*2 - 1*0) / sqrt(2*1*3*2)
    ("MRPC", {"acc": 0.75, "f1": 2 / 3}),                # precision 1/2, recall 1
    ("QQP", {"acc": 0.75, "f1": 2 / 3}),
])
def test_classification_metrics(name, expected):
    assert compute_metrics(get_task(name), PREDICTIONS, LABELS) == pytest.approx(expected)


def test_regression_metrics():
    # x - mean = (-1.5, -.5, .5, 1.5), y - mean = (-1.75, -.75, .25, 2.25): r = 6.5 / sqrt(5 * 8.75)
    metrics = compute_metrics("STS-B", [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0])
    assert metrics == pytest.approx({"pearson": 6.5 / math.sqrt(43.75), "spearmanr": 1.0})


def test_a_constant_prediction_has_zero_correlation_not_nan():
    """scipy's Pearson/Spearman of a constant prediction is NaN, which the log readers refuse as damaged:
    a real STS-B run predicting one score would never be logged as done. It is 0.0, as sklearn's MCC."""
    metrics = compute_metrics("STS-B", [2.5, 2.5, 2.5, 2.5], [1.0, 2.0, 3.0, 5.0])
    assert metrics == {"pearson": 0.0, "spearmanr": 0.0}


@pytest.mark.parametrize("name", list(TASKS))
def test_main_metric_is_reported(name):
    task = TASKS[name]
    if task.regression:
        predictions, labels = [0.5, 2.0, 4.5], [1.0, 2.5, 4.0]
    else:
        predictions, labels = [0, 1, 1, 0], [0, 1, 0, 1]
    assert task.main_metric in compute_metrics(task, predictions, labels)


def test_metrics_length_mismatch():
    with pytest.raises(UserError, match="3 predictions for 2 labels"):
        compute_metrics("SST-2", [0, 1, 1], [0, 1])
