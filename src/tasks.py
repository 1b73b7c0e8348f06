"""The table of tasks: label lists, output mode, main metric, and the paper's per-task settings.

One entry per task; everything that scripts and tools need about a task is read from here,
including where its data files keep the sentences and labels (`Layout`), how to read them
(`read_examples`) and how to score predictions (`compute_metrics`).
"""
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.errors import UserError


@dataclass(frozen=True)
class InputExample:
    guid: str                      # "{split}-{n}": line n of a tsv file, row n of a csv file
    text_a: str
    text_b: str = None             # None for single-sentence tasks
    label: object = None           # label string as in the file; float for STS-B


@dataclass(frozen=True)
class Layout:
    """Columns of a data file (-1 = last column). csv: LM-BFF's `label,text` files."""
    text_a: int
    text_b: int = None
    label: int = -1
    header: bool = True
    csv: bool = False

    @property
    def extension(self):
        return "csv" if self.csv else "tsv"


LMBFF_CSV = Layout(text_a=1, label=0, header=False, csv=True)

SOFT_ONE = "*cls*{P}*sent_0**sep+**mask**sep+*"
SOFT_TWO = "*cls*{P}*sent_0**sep+**sent_1**sep+**mask**sep+*"


def _accuracy(labels, predictions):
    return float((np.asarray(predictions) == np.asarray(labels)).mean())


def _f1(labels, predictions):
    from sklearn.metrics import f1_score  # slow imports that only metrics need
    return float(f1_score(labels, predictions))  # positive class: index 1 (label "1")


def _mcc(labels, predictions):
    from sklearn.metrics import matthews_corrcoef
    return float(matthews_corrcoef(labels, predictions))


def _correlation(name):
    """scipy.stats' correlation `name`, 0.0 where it is undefined (a constant prediction or constant
    labels; scikit-learn's matthews_corrcoef does the same): scipy gives NaN there, which the log
    readers refuse as a damaged metric."""
    def metric(labels, predictions):
        if np.ptp(np.asarray(predictions, dtype=float)) == 0 or np.ptp(np.asarray(labels, dtype=float)) == 0:
            return 0.0
        import scipy.stats  # slow imports that only metrics need
        return float(getattr(scipy.stats, name)(predictions, labels)[0])
    return metric


# Metric name -> f(labels, predictions); class indices for classification, scores for regression.
METRICS = {"acc": _accuracy, "f1": _f1, "mcc": _mcc, "pearson": _correlation("pearsonr"),
           "spearmanr": _correlation("spearmanr")}


@dataclass(frozen=True)
class Task:
    name: str                      # canonical spelling, as in the data folders (SST-2, sst-5, ...)
    labels: tuple                  # label values as they appear in the files (strings)
    main_metric: str               # metric used to pick the best dev checkpoint and in tables
    manual_template: str           # HARD=Y template; "{P}" is where *prompt* goes
    mapping: str                   # label words as a Python dict literal
    two_sentences: bool = False
    metrics: tuple = ("acc",)      # names in METRICS, reported for every evaluation
    label_range: tuple = None      # regression (STS-B): (low, high) of the scores; None: classification
    # Regression: LM-BFF's fixed split of the scores into a low and a high class ("median_mapping"):
    # demonstrations take score <= split as low; the k-shot generator bins score < split as low.
    regression_split: float = None
    extra_args: tuple = ()         # per-task run.py arguments (SPEC §8)
    fulldata_args: tuple = ()      # run.py arguments added in full-data runs (after extra_args)
    splits: dict = field(default_factory=lambda: {"train": "train", "dev": "dev", "test": "test"})
    layout: Layout = LMBFF_CSV

    def __post_init__(self):
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or self.main_metric not in self.metrics:
            raise ValueError(f"task {self.name}: metrics {self.metrics} must be known and hold {self.main_metric}")

    @property
    def regression(self):
        return self.label_range is not None

    @property
    def key(self):
        """Lower-case name used in results records (LM-BFF's `task_name`)."""
        return self.name.lower()

    def template(self, hard="Y", prompt=False):
        """The HARD=Y (manual) or HARD=N (soft-only) template, with or without `*prompt*`."""
        if hard not in ("Y", "N"):
            raise UserError(f"HARD must be Y or N, got {hard!r}")
        pattern = self.manual_template if hard == "Y" else (SOFT_TWO if self.two_sentences else SOFT_ONE)
        return pattern.replace("{P}", "prompt" if prompt else "")


_SINGLE = ("--first_sent_limit", "110")
_NLI3 = ("contradiction", "entailment", "neutral")
_NLI2 = ("entailment", "not_entailment")
_MNLI_TEMPLATE = "*cls*{P}*sent-_0*?*mask*,*+sentl_1**sep+*"
_PAIR_TEMPLATE = "*cls*{P}*sent_0**mask*,*+sentl_1**sep+*"
_IT_WAS = "*cls*{P}*sent_0*_It_was*mask*.*sep+*"
_THIS_IS = "*cls*{P}*sent_0*_This_is*mask*.*sep+*"
_POLARITY_WORDS = "{'0':'terrible','1':'great'}"
_YES_NO_WORDS = "{'0':'No','1':'Yes'}"
_NLI3_WORDS = "{'contradiction':'No','entailment':'Yes','neutral':'Maybe'}"
_NLI2_WORDS = "{'not_entailment':'No','entailment':'Yes'}"


TASKS = {t.key: t for t in [
    Task("SST-2", ("0", "1"), "acc", _IT_WAS, _POLARITY_WORDS,
         layout=Layout(text_a=0, label=1)),
    Task("CoLA", ("0", "1"), "mcc", _THIS_IS, "{'0':'incorrect','1':'correct'}", metrics=("acc", "mcc"),
         layout=Layout(text_a=3, label=1, header=False)),
    Task("MRPC", ("0", "1"), "f1", _PAIR_TEMPLATE, _YES_NO_WORDS, two_sentences=True, metrics=("acc", "f1"),
         layout=Layout(text_a=3, text_b=4, label=0)),
    Task("QQP", ("0", "1"), "f1", _PAIR_TEMPLATE, _YES_NO_WORDS, two_sentences=True, metrics=("acc", "f1"),
         extra_args=("--num_sample", "4"), layout=Layout(text_a=3, text_b=4, label=5)),
    Task("STS-B", ("0", "1"), "pearson", _PAIR_TEMPLATE, _YES_NO_WORDS, two_sentences=True,
         metrics=("pearson", "spearmanr"), label_range=(0.0, 5.0), regression_split=2.5, layout=Layout(text_a=7, text_b=8)),
    Task("MNLI", _NLI3, "acc", _MNLI_TEMPLATE, _NLI3_WORDS, two_sentences=True,
         extra_args=("--max_seq_length", "512", "--num_sample", "4"),
         splits={"train": "train", "dev": "dev_matched", "test": "test_matched",
                 "test-mm": "test_mismatched"},
         layout=Layout(text_a=8, text_b=9)),
    Task("SNLI", _NLI3, "acc", _MNLI_TEMPLATE, _NLI3_WORDS, two_sentences=True,
         extra_args=("--max_seq_length", "256", "--num_sample", "4"), layout=Layout(text_a=7, text_b=8)),
    Task("QNLI", _NLI2, "acc", _MNLI_TEMPLATE, _NLI2_WORDS, two_sentences=True,
         fulldata_args=("--max_seq_length", "512"), layout=Layout(text_a=1, text_b=2)),
    Task("RTE", _NLI2, "acc", _MNLI_TEMPLATE, _NLI2_WORDS, two_sentences=True,
         extra_args=("--max_seq_length", "512", "--first_sent_limit", "240"), layout=Layout(text_a=1, text_b=2)),
    Task("mr", ("0", "1"), "acc", _IT_WAS, _POLARITY_WORDS,
         extra_args=_SINGLE + ("--other_sent_limit", "50", "--double_demo")),
    Task("cr", ("0", "1"), "acc", _IT_WAS, _POLARITY_WORDS,
         extra_args=_SINGLE + ("--other_sent_limit", "50", "--double_demo")),
    Task("mpqa", ("0", "1"), "acc", _IT_WAS, _POLARITY_WORDS,
         extra_args=_SINGLE + ("--double_demo",)),
    Task("sst-5", ("0", "1", "2", "3", "4"), "acc", _IT_WAS,
         "{'0':'terrible','1':'bad','2':'okay','3':'good','4':'great'}",
         extra_args=_SINGLE + ("--other_sent_limit", "20", "--double_demo")),
    Task("subj", ("0", "1"), "acc", _THIS_IS, "{'0':'subjective','1':'objective'}",
         extra_args=_SINGLE + ("--other_sent_limit", "50", "--double_demo")),
    Task("trec", ("0", "1", "2", "3", "4", "5"), "acc", "*cls*{P}*mask*:*+sent_0**sep+*",
         "{'0':'Description','1':'Entity','2':'Expression','3':'Human','4':'Location','5':'Number'}",
         extra_args=_SINGLE + ("--double_demo",)),
]}


def get_task(name):
    """Look a task up by name, case-insensitively (`SST-2`, `sst-2`); `mnli-mm` is MNLI."""
    key = name.lower()
    if key == "mnli-mm":
        key = "mnli"
    if key not in TASKS:
        known = ", ".join(t.name for t in TASKS.values())
        raise UserError(f"unknown task {name!r}; known tasks: {known}")
    return TASKS[key]


def data_file(task, data_dir, split):
    """Path of `split` (train/dev/test, test-mm for MNLI) of `task` under `data_dir`."""
    if split not in task.splits:
        raise UserError(f"task {task.name} has no split {split!r}; splits: {', '.join(task.splits)}")
    return Path(data_dir) / f"{task.splits[split]}.{task.layout.extension}"


def read_examples(task, data_dir, split):
    """The examples of one split, in file order. Labels are checked against `task.labels`.

    Every problem with the file is a UserError `path:line: what is wrong`; a split without examples
    (empty or header only) is an error."""
    task = get_task(task) if isinstance(task, str) else task
    path = data_file(task, data_dir, split)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    text = _read_text(path)
    rows = _read_csv(path, text) if task.layout.csv else _read_tsv(text, task.layout.header)
    examples = [_example(task, path, split, number, row) for number, row in rows]
    if not examples:
        header = " or holds only its header" if task.layout.header else ""
        raise UserError(f"{path}:1: no examples (the file is empty{header})")
    return examples


def _read_text(path):
    """The file's text; bytes that are not UTF-8 are an error naming their line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {data[error.start]:#x})") from None


def _read_tsv(text, header):
    """GLUE tsv: tab-separated, no quoting; yields (line number, fields)."""
    for number, line in enumerate(io.StringIO(text, newline=None), start=1):  # universal newlines, as open()
        line = line.rstrip("\n")
        if line and not (header and number == 1):
            yield number, line.split("\t")


def _read_csv(path, text):
    """LM-BFF csv (`label,text`, no header, quoted as pandas writes it); yields (line number, fields)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns = None
    try:
        for row in reader:
            if not row:
                continue
            columns = columns or len(row)
            if len(row) != columns:
                raise UserError(f"{path}:{reader.line_num}: {len(row)} fields, the first row has {columns}")
            yield reader.line_num, row
    except csv.Error as error:
        raise UserError(f"{path}:{reader.line_num}: malformed csv ({error})") from None


def _example(task, path, split, number, fields):
    layout = task.layout
    try:
        text_a = fields[layout.text_a]
        text_b = None if layout.text_b is None else fields[layout.text_b]
        label = fields[layout.label]
    except IndexError:
        raise UserError(f"{path}:{number}: {len(fields)} columns, too few for task {task.name}") from None
    if task.regression:
        try:
            label = float(label)
        except ValueError:
            raise UserError(f"{path}:{number}: label {label!r} is not a number") from None
    elif label not in task.labels:
        raise UserError(f"{path}:{number}: label {label!r} is not one of {list(task.labels)}")
    return InputExample(guid=f"{split}-{number}", text_a=text_a, text_b=text_b, label=label)


def compute_metrics(task, predictions, labels):
    """The task's metrics (`task.metrics`) keyed by bare name; `task.main_metric` is one of them.

    Classification: predictions and labels are indices into `task.labels`; STS-B: float scores.
    """
    task = get_task(task) if isinstance(task, str) else task
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise UserError(f"{len(predictions)} predictions for {len(labels)} labels")
    return {name: METRICS[name](labels, predictions) for name in task.metrics}
