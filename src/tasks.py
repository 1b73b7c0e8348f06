"""The table of tasks: label lists, output mode, main metric, and the paper's per-task settings.

One entry per task; everything that scripts and tools need about a task is read from here,
including where its data files keep the sentences and labels (`Layout`), how to read them
(`read_examples`) and how to score predictions (`compute_metrics`). A user's own task is a task file
(`load_task_file`: JSON, the same fields, the same checks).
"""
import ast
import csv
import io
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from src.checks import is_number
from src.errors import UserError
from src.files import read_regular
from src.templates import parse_mapping, parse_template


@dataclass(frozen=True)
class InputExample:
    guid: str                      # "{split}-{n}": line n of a tsv or jsonl file, row n of a csv file
    text_a: str
    text_b: str = None             # None for single-sentence tasks
    label: object = None           # label string as in the file; float for STS-B


FORMATS = ("tsv", "csv", "jsonl")


class TaskError(ValueError):
    """A task definition breaks a rule; `field` names the Task (or `layout.`) field."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Layout:
    """Where a data file keeps each example's texts and label. tsv and csv: column numbers (-1 = the last
    column; csv as pandas writes it, e.g. LM-BFF's `label,text` files); jsonl: one JSON object per line,
    and the names of its fields. A jsonl file has no header."""
    text_a: object
    text_b: object = None
    label: object = -1
    header: bool = True
    format: str = "tsv"

    def __post_init__(self):
        if self.format not in FORMATS:
            raise TaskError("layout.format", f"must be one of {', '.join(FORMATS)}, got {_shown(self.format)}")
        if not isinstance(self.header, bool):
            raise TaskError("layout.header", f"must be true or false, got {_shown(self.header)}")
        if self.format == "jsonl":
            object.__setattr__(self, "header", False)
        column = ("a field name (a non-empty string)", lambda v: isinstance(v, str) and v != "")
        if self.format != "jsonl":
            column = ("a column number (0 = the first, -1 = the last)",
                      lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= -1)
        for name in ("text_a", "text_b", "label"):
            value = getattr(self, name)
            if not (value is None and name == "text_b") and not column[1](value):
                raise TaskError(f"layout.{name}", f"must be {column[0]} in a {self.format} layout, got {_shown(value)}")

    @property
    def extension(self):
        return self.format


LMBFF_CSV = Layout(text_a=1, label=0, header=False, format="csv")

SOFT_ONE = "*cls*{P}*sent_0**sep+**mask**sep+*"
SOFT_TWO = "*cls*{P}*sent_0**sep+**sent_1**sep+**mask**sep+*"
PROMPT_SLOT = "{P}"


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


REGRESSION_METRICS = ("pearson", "spearmanr")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a folder name and the start of a metric key
_SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Task:
    """One task. The built-in rows (TASKS) and a user's task file (`load_task_file`) hold the same fields
    and pass the same checks (`__post_init__`: a broken row fails at import, a broken file is one error)."""
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
    # Further test splits (keys of `splits`), each recorded as the test set of a task of its own name:
    # MNLI's mismatched test split test-mm is task mnli-mm in the records (mnli-mm_test_eval_acc).
    other_tests: dict = field(default_factory=dict)
    layout: Layout = LMBFF_CSV
    source: str = field(default=None, compare=False)  # the task file it was read from; None: built in

    def __post_init__(self):
        for name, problem in self._problems():
            if problem:
                raise TaskError(name, problem)

    def _problems(self):
        """(field, what is wrong or None) for each rule, in the order of the fields."""
        yield "name", _allowed(self.name, lambda v: isinstance(v, str) and _NAME.fullmatch(v),
                               "letters, digits, '-' and '_' (starting with a letter or digit)")
        yield "labels", _allowed(self.labels, lambda v: isinstance(v, tuple) and len(v) >= 2 and len(set(v)) == len(v)
                                 and all(isinstance(label, str) and label for label in v),
                                 "a list of at least 2 distinct non-empty strings")
        yield "two_sentences", _allowed(self.two_sentences, lambda v: isinstance(v, bool), "true or false")
        yield "label_range", _allowed(self.label_range, lambda v: v is None or (
            isinstance(v, tuple) and len(v) == 2 and all(map(is_number, v)) and v[0] < v[1]),
            "null (classification) or [low, high] of the scores, low < high (regression)")
        yield "regression_split", self._split_problem()
        allowed = REGRESSION_METRICS if self.regression else tuple(m for m in METRICS if m not in REGRESSION_METRICS)
        yield "metrics", _allowed(self.metrics, lambda v: isinstance(v, tuple) and v and set(v) <= set(allowed),
                                  f"a non-empty list of {', '.join(allowed)}"
                                  f" ({'regression' if self.regression else 'classification'})")
        yield "metrics", ("f1 scores the second label as the positive class: it needs exactly 2 labels"
                          if "f1" in self.metrics and len(self.labels) != 2 else None)
        yield "main_metric", _allowed(self.main_metric, lambda v: v in self.metrics,
                                      f"one of the task's metrics ({', '.join(self.metrics)})")
        yield "manual_template", self._template_problem()
        yield "mapping", self._mapping_problem()
        for name in ("extra_args", "fulldata_args"):
            yield name, _allowed(getattr(self, name), lambda v: isinstance(v, tuple) and all(
                isinstance(a, str) for a in v) and (not v or v[0].startswith("--")),
                "a list of run.py arguments, e.g. [\"--max_seq_length\", \"256\"]")
        yield "splits", _allowed(self.splits, lambda v: isinstance(v, dict) and set(_SPLITS) <= set(v) and all(
            isinstance(k, str) and isinstance(f, str) and _NAME.fullmatch(f) for k, f in v.items()),
            "an object naming the file of each split (train, dev, test and any other test split), "
            "e.g. {\"train\": \"train\", \"dev\": \"dev\", \"test\": \"test\"}")
        yield "other_tests", _allowed(self.other_tests, lambda v: isinstance(v, dict) and all(
            k in self.splits and k not in _SPLITS and isinstance(n, str) and _NAME.fullmatch(n) and n != self.name
            for k, n in v.items()), "an object {split: name of its test set in the records} over the splits "
            "beyond train, dev and test")
        yield "layout", _allowed(self.layout, lambda v: isinstance(v, Layout)
                                 and (v.text_b is None) != self.two_sentences,
                                 "a layout whose text_b is given exactly when two_sentences is true")

    def _split_problem(self):
        if not self.regression:
            return None if self.regression_split is None else "must be null for a classification task"
        if not (is_number(self.regression_split) and self.label_range[0] <= self.regression_split
                <= self.label_range[1]):
            return f"must be a number within label_range {list(self.label_range)}, got {self.regression_split!r}"
        return None if len(self.labels) == 2 else "a regression task has 2 labels (the low and the high label word)"

    def _template_problem(self):
        if not (isinstance(self.manual_template, str) and self.manual_template.count(PROMPT_SLOT) == 1):
            return f"must be a template with one {PROMPT_SLOT} (where *prompt* goes), got {self.manual_template!r}"
        try:
            parts = parse_template(self.template("Y", prompt=True)).parts
        except UserError as error:
            return str(error)
        used = {part.index for part in parts if part.kind == "sent"}
        needed = {0, 1} if self.two_sentences else {0}
        if used != needed:
            return (f"must use the sentence part(s) {', '.join(f'*sent_{i}*' for i in sorted(needed))} "
                    f"(two_sentences is {str(self.two_sentences).lower()}), got {self.manual_template!r}")
        return None

    def _mapping_problem(self):
        try:
            parse_mapping(self.mapping, self.labels)
        except UserError as error:
            return f"{error} (one label word per label)"
        return None

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
        return pattern.replace(PROMPT_SLOT, "prompt" if prompt else "")

    def definition(self):
        """The task as a task file holds it (a JSON object): what a run's record keeps of a task file."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.compare}
        values["mapping"] = ast.literal_eval(self.mapping)
        values["layout"] = {f.name: getattr(self.layout, f.name) for f in fields(Layout)}
        return json.loads(json.dumps(values))


def _allowed(value, test, text):
    """None when `test(value)` holds, else what the field must be and what it is."""
    try:
        if test(value):
            return None
    except TypeError:
        pass
    return f"must be {text}, got {_shown(value)}"


def _shown(value):
    """A value as a task file spells it (JSON)."""
    return json.dumps(value, default=repr)


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
         metrics=("pearson", "spearmanr"), label_range=(0.0, 5.0), regression_split=2.5,
         layout=Layout(text_a=7, text_b=8)),
    Task("MNLI", _NLI3, "acc", _MNLI_TEMPLATE, _NLI3_WORDS, two_sentences=True,
         extra_args=("--max_seq_length", "512", "--num_sample", "4"),
         splits={"train": "train", "dev": "dev_matched", "test": "test_matched",
                 "test-mm": "test_mismatched"}, other_tests={"test-mm": "mnli-mm"},
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


# A test set recorded under a name of its own (MNLI's mismatched test set, mnli-mm) -> its task.
OTHER_TESTS = {name.lower(): task for task in TASKS.values() for name in task.other_tests.values()}


def is_task_name(name):
    """True for a built-in task's name or one of its other test sets' names (`mnli-mm`), in any case."""
    return isinstance(name, str) and (name.lower() in TASKS or name.lower() in OTHER_TESTS)


def get_task(name):
    """Look a task up by name, case-insensitively (`SST-2`, `sst-2`); the name of another test set of a
    task is that task (`mnli-mm` is MNLI). A Task (e.g. from a task file) is returned as it is."""
    if isinstance(name, Task):
        return name
    if not is_task_name(name):
        known = ", ".join(t.name for t in TASKS.values())
        raise UserError(f"unknown task {name!r}; known tasks: {known} (a task of your own: a task file, "
                        "see README 'Your own task')")
    return TASKS.get(name.lower()) or OTHER_TESTS[name.lower()]


# A task file: a JSON object of Task fields (`Task.definition` writes one). Optional fields take the
# Task's defaults; mapping is a JSON object {label: label word}, layout an object of Layout fields.
FILE_FIELDS = {f.name: f for f in fields(Task) if f.compare}
REQUIRED_FIELDS = ("name", "labels", "main_metric", "manual_template", "mapping", "layout")
_TUPLES = ("labels", "metrics", "label_range", "extra_args", "fulldata_args")


def load_task_file(path):
    """The Task of a task file, checked as the built-in rows are; every problem is one UserError
    `FILE: FIELD: what is allowed`."""
    path = str(path)
    values = _json_object(read_regular(path, "task file"), path, "a JSON object of task fields")
    unknown = sorted(set(values) - set(FILE_FIELDS))
    if unknown:
        raise UserError(f"{path}: unknown field(s) {', '.join(unknown)}; a task file holds {', '.join(FILE_FIELDS)}")
    missing = [name for name in REQUIRED_FIELDS if name not in values]
    if missing:
        raise UserError(f"{path}: missing field(s) {', '.join(missing)} (required: {', '.join(REQUIRED_FIELDS)})")
    try:
        return Task(**_task_values(values), source=path)
    except TaskError as error:
        raise UserError(f"{path}: {error.field}: {error}") from None


def named_task(name=None, task_file=None, name_flag="--task_name", file_flag="--task_file"):
    """The task a command line names: a built-in task's name, or a task file (a name given too, as the
    sweeps pass both, must be the file's task)."""
    if task_file is None:
        if name is None:
            raise UserError(f"{name_flag} (a built-in task) or {file_flag} (a task of your own) is required")
        try:
            return get_task(name)
        except UserError as error:
            raise UserError(f"{name_flag}: {error}") from None
    task = load_task_file(task_file)
    if name is not None and name.lower() != task.key:
        raise UserError(f"{name_flag} {name} is not the task of {file_flag} {task_file} ({task.name}); "
                        "give one of them")
    return task


def recorded_task(record):
    """The task of a run's record: the task file it keeps (`Task.definition`), or its built-in task."""
    definition = record.get("task_file")
    if definition is None:
        return get_task(record.get("task_name"))
    try:
        return Task(**_task_values(definition))
    except (TaskError, TypeError, KeyError, AttributeError) as error:
        raise UserError(f"a record of task {record.get('task_name')!r} keeps a task file this version cannot read "
                        f"({error})") from None


def _task_values(values):
    """JSON values -> Task arguments: lists as tuples, mapping as a dict literal, layout as a Layout
    (what cannot be converted is passed on for the Task's checks to name)."""
    values = {key: tuple(value) if key in _TUPLES and isinstance(value, list) else value
              for key, value in values.items()}
    builtin = f"a built-in task's name ({', '.join(t.name for t in TASKS.values())}, {', '.join(OTHER_TESTS)})"
    if is_task_name(values["name"]):
        raise TaskError("name", f"must not be {builtin}, got {_shown(values['name'])}")
    other_tests = values.get("other_tests")
    taken = [name for name in other_tests.values() if is_task_name(name)] if isinstance(other_tests, dict) else []
    if taken:
        raise TaskError("other_tests", f"must not name {builtin}, got {_shown(taken[0])}")
    mapping = values["mapping"]
    if not (isinstance(mapping, dict) and all(isinstance(word, str) for word in mapping.values())):
        raise TaskError("mapping", f"must be an object {{label: label word}}, got {_shown(mapping)}")
    values["mapping"] = "{" + ",".join(f"{label!r}:{word!r}" for label, word in mapping.items()) + "}"
    layout = values["layout"]
    if not isinstance(layout, dict) or not set(layout) <= {f.name for f in fields(Layout)} or "text_a" not in layout:
        raise TaskError("layout", f"must be an object with text_a and any of text_b, label, header, format "
                        f"({', '.join(FORMATS)}), got {_shown(layout)}")
    values["layout"] = Layout(**layout)
    return values


def data_file(task, data_dir, split):
    """Path of `split` (train/dev/test, and other test splits: test-mm for MNLI) of `task` under `data_dir`."""
    if split not in task.splits:
        raise UserError(f"task {task.name} has no split {split!r}; splits: {', '.join(task.splits)}")
    return Path(data_dir) / f"{task.splits[split]}.{task.layout.extension}"


def read_examples(task, data_dir, split):
    """The examples of one split, in file order. Labels are checked against `task.labels`.

    Every problem with the file is a UserError `path:line: what is wrong`; a split without examples
    (empty or header only) is an error."""
    task = get_task(task)
    path = data_file(task, data_dir, split)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    text = _read_text(path)
    layout = task.layout
    rows = {"csv": lambda: _read_csv(path, text, layout.header), "tsv": lambda: _read_tsv(text, layout.header),
            "jsonl": lambda: _read_jsonl(path, text)}[layout.format]()
    examples = [_example(task, path, split, number, row) for number, row in rows]
    if not examples:
        header = " or holds only its header" if layout.header else ""
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


def _lines(text):
    """(line number, line without its end), universal newlines as open() reads them."""
    for number, line in enumerate(io.StringIO(text, newline=None), start=1):
        yield number, line.rstrip("\n")


def _read_tsv(text, header):
    """GLUE tsv: tab-separated, no quoting; yields (line number, fields)."""
    for number, line in _lines(text):
        if line and not (header and number == 1):
            yield number, line.split("\t")


def _read_jsonl(path, text):
    """JSON lines: one object per non-blank line; yields (line number, object)."""
    for number, line in _lines(text):
        if line.strip():
            yield number, _json_object(line, f"{path}:{number}", "a JSON object")


def _json_object(text, where, what):
    """The JSON object `text` holds; a UserError `where: not WHAT ...` otherwise."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise UserError(f"{where}: not {what} ({error})") from None
    if isinstance(value, dict):
        return value
    raise UserError(f"{where}: not {what}, got {type(value).__name__}")


def _read_csv(path, text, header):
    """csv as pandas writes it (LM-BFF's `label,text` files: no header); yields (line number, fields)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns = None
    try:
        for row in reader:
            if not row or (header and reader.line_num == 1):
                continue
            columns = columns or len(row)
            if len(row) != columns:
                raise UserError(f"{path}:{reader.line_num}: {len(row)} fields, the first row has {columns}")
            yield reader.line_num, row
    except csv.Error as error:
        raise UserError(f"{path}:{reader.line_num}: malformed csv ({error})") from None


def _in_file(task):
    return f" (task file {task.source})" if task.source else ""


def _field(task, path, number, row, name):
    """The value of the layout's field `name` (text_a, text_b, label) in `row` (a list or an object)."""
    where = getattr(task.layout, name)
    try:
        value = row[where]
    except (IndexError, KeyError):
        found = f"{len(row)} columns" if isinstance(row, list) else f"fields {', '.join(map(repr, row))}"
        raise UserError(f"{path}:{number}: {found}, too few for task {task.name}: layout.{name} is "
                        f"{where!r}{_in_file(task)}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name == "label":
        return value if task.regression else str(value)
    if not isinstance(value, str):
        raise UserError(f"{path}:{number}: {name} {json.dumps(value)} is not a string{_in_file(task)}")
    return value


def _example(task, path, split, number, row):
    text_a = _field(task, path, number, row, "text_a")
    text_b = None if task.layout.text_b is None else _field(task, path, number, row, "text_b")
    label = _field(task, path, number, row, "label")
    if task.regression:
        try:
            label = float(label)
        except ValueError:
            raise UserError(f"{path}:{number}: label {label!r} is not a number") from None
    elif label not in task.labels:
        labels = f"; the labels of task file {task.source}" if task.source else ""
        raise UserError(f"{path}:{number}: label {label!r} is not one of {list(task.labels)}{labels}")
    return InputExample(guid=f"{split}-{number}", text_a=text_a, text_b=text_b, label=label)


def compute_metrics(task, predictions, labels):
    """The task's metrics (`task.metrics`) keyed by bare name; `task.main_metric` is one of them.

    Classification: predictions and labels are indices into `task.labels`; STS-B: float scores.
    """
    task = get_task(task)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise UserError(f"{len(predictions)} predictions for {len(labels)} labels")
    return {name: METRICS[name](labels, predictions) for name in task.metrics}
