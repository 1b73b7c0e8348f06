"""A task of one's own as a task file (src/tasks.py: load_task_file): one validation with the built-in rows,
the same features and metrics as a built-in row written as a file, JSONL layouts, run identity by content,
and the shipped example (examples/topic) end to end: k-shot generation, a 2-run sweep, gather, table."""
import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import run
from src.arguments import parse_args
from src.dataset import FewShotDataset
from src.errors import UserError
from src.experiment import Experiment
from src.identity import run_identity
from src.launch import describe_all
from src.results import METRIC_KEY
from src.tasks import TASKS, TaskError, get_task, load_task_file, read_examples
from tests.test_scripts import ROOT, read_log, run_script
from tools import gather_result, generate_k_shot_data, make_table, task_args

# .ci/run spreads tests one by one (--dist loadgroup): this file's share module fixtures
pytestmark = pytest.mark.xdist_group("test_task_file")

EXAMPLE = ROOT / "examples" / "topic"
TASK_FILE = EXAMPLE / "task.json"


def write_task(folder, file="task.json", **changes):
    """The example's task file with `changes` (a value None removes the field), written into `folder`."""
    values = {**json.loads(TASK_FILE.read_text()), **changes}
    path = Path(folder) / file
    path.write_text(json.dumps({key: value for key, value in values.items() if value is not None}))
    return path


@pytest.fixture(scope="module")
def kshot(tmp_path_factory):
    """The example's 8-shot splits of seeds 13 and 42 (OUTPUT/k-shot/topic/8-SEED)."""
    out = tmp_path_factory.mktemp("topic")
    code = generate_k_shot_data.main(["--task_file", str(TASK_FILE), "--data_dir", str(EXAMPLE / "original"),
                                      "--output_dir", str(out), "--k", "8", "--seed", "13", "42"])
    assert code == 0
    return out


def run_argv(task_file, data_dir, model, tmp_path, *extra):
    task = load_task_file(task_file)
    return ["--task_file", str(task_file), "--data_dir", str(data_dir), "--model_name_or_path", model,
            "--template", task.template("Y"), "--mapping", task.mapping, "--num_k", "8", "--do_train",
            "--max_steps", "2", "--output_dir", str(tmp_path / "out"), "--log_file", str(tmp_path / "log"),
            "--feature_cache_dir", str(tmp_path / "cache"), *extra]


# ---- one validation: the built-in rows and a task file -------------------------------------------

def test_every_builtin_row_is_a_valid_task_file(tmp_path):
    """Each row, written as a task file under another name, reads back as the same task."""
    for task in TASKS.values():
        definition = {**task.definition(), "name": f"my-{task.key}",
                      "other_tests": {split: f"my-{name}" for split, name in task.other_tests.items()}}
        path = tmp_path / f"{task.key}.json"
        path.write_text(json.dumps(definition))
        mine = load_task_file(path)
        assert dataclasses.replace(mine, name=task.name, other_tests=task.other_tests) == task
        assert mine.source == str(path)


def test_a_broken_builtin_row_fails_the_same_check():
    with pytest.raises(TaskError, match="acc, f1, mcc") as error:
        dataclasses.replace(TASKS["sst-2"], metrics=("acc", "accuracy"))
    assert error.value.field == "metrics"
    with pytest.raises(TaskError, match="exactly one \\*mask\\*"):
        dataclasses.replace(TASKS["sst-2"], manual_template="*cls*{P}*sent_0*.*sep+*")


# (changes to the example's task file, the field or text its error names)
FILE_CASES = {
    "unknown metric": ({"metrics": ["acc", "accuracy"]}, "metrics: must be a non-empty list of acc, f1, mcc"),
    "main metric not reported": ({"main_metric": "mcc"}, "main_metric: must be one of the task's metrics (acc)"),
    "f1 of three labels": ({"labels": ["a", "b", "c"], "metrics": ["acc", "f1"],
                            "mapping": {"a": "x", "b": "y", "c": "z"}}, "metrics: f1 scores the second label"),
    "template without mask": ({"manual_template": "*cls*{P}*sent_0*_This_is_about.*sep+*"},
                              "manual_template: template '*cls*prompt*sent_0*_This_is_about.*sep+*' must contain "
                              "exactly one *mask*"),
    "template without the prompt slot": ({"manual_template": "*cls**sent_0**mask*.*sep+*"},
                                         "manual_template: must be a template with one {P}"),
    "template of the wrong sentences": ({"manual_template": "*cls*{P}*sent_0**sent_1**mask*.*sep+*"},
                                        "manual_template: must use the sentence part(s) *sent_0*"),
    "label word missing": ({"mapping": {"food": "food"}}, "mapping: mapping"),
    "mapping not an object": ({"mapping": "{'food':'food','sports':'sports'}"}, "mapping: must be an object"),
    "one label": ({"labels": ["food"], "mapping": {"food": "food"}}, "labels: must be a list of at least 2"),
    "built-in name": ({"name": "sst-2"}, "name: must not be a built-in task's name"),
    "name with a slash": ({"name": "my/task"}, "name: must be letters, digits"),
    "text_b of a one-sentence task": ({"layout": {"format": "jsonl", "text_a": "text", "text_b": "other",
                                                  "label": "label"}}, "layout: must be a layout whose text_b"),
    "column numbers in jsonl": ({"layout": {"format": "jsonl", "text_a": 0, "label": 1}},
                                "layout.text_a: must be a field name"),
    "field names in tsv": ({"layout": {"format": "tsv", "text_a": "text", "label": "label"}},
                           "layout.text_a: must be a column number"),
    "unknown format": ({"layout": {"format": "xml", "text_a": "text"}},
                       "layout.format: must be one of tsv, csv, jsonl"),
    "regression split of a classification": ({"regression_split": 2.5}, "regression_split: must be null"),
    "extra_args not a list of strings": ({"extra_args": ["--max_seq_length", 64]}, "extra_args: must be a list"),
    "splits without test": ({"splits": {"train": "train", "dev": "dev"}}, "splits: must be an object"),
    "other test named like a built-in": ({"splits": {"train": "train", "dev": "dev", "test": "test", "test-mm": "mm"},
                                          "other_tests": {"test-mm": "mnli-mm"}},
                                         "other_tests: must not name a built-in task's name"),
    "other test of an unknown split": ({"other_tests": {"test-mm": "topic-mm"}}, "other_tests: must be an object"),
    "unknown field": ({"label_words": {}}, "unknown field(s) label_words"),
    "missing field": ({"labels": None}, "missing field(s) labels"),
}


@pytest.mark.parametrize("case", FILE_CASES)
def test_a_bad_task_file_is_one_line_naming_file_and_field(case, kshot, tiny_bert, tmp_path, capsys):
    changes, expected = FILE_CASES[case]
    path = write_task(tmp_path, **changes)
    argv = run_argv(TASK_FILE, kshot / "k-shot/topic/8-13", tiny_bert, tmp_path)
    argv[1] = str(path)
    before = sorted(tmp_path.rglob("*"))
    assert run.main(argv) == 2
    assert_one_error(capsys, f"error: {path}: {expected}")
    assert sorted(tmp_path.rglob("*")) == before  # no log, output or cache
    for main, args in ((task_args.main, ["--task_file", str(path)]),
                       (generate_k_shot_data.main, ["--task_file", str(path), "--data_dir", str(EXAMPLE / "original"),
                                                    "--output_dir", str(tmp_path / "kshot"), "--k", "8"])):
        assert main(args) == 2
        assert_one_error(capsys, f"error: {path}: {expected}")
    assert sorted(tmp_path.rglob("*")) == before


def test_a_task_file_that_is_not_a_json_object(tmp_path, capsys):
    for text, expected in (("{", "not a JSON object of task fields (Expecting"), ("[1]", "not a JSON object of task "
                                                                                  "fields, got list")):
        (tmp_path / "task.json").write_text(text)
        assert task_args.main(["--task_file", str(tmp_path / "task.json")]) == 2
        assert_one_error(capsys, f"error: {tmp_path / 'task.json'}: {expected}")
    assert task_args.main(["--task_file", str(tmp_path / "none.json")]) == 2
    assert_one_error(capsys, f"error: task file '{tmp_path / 'none.json'}' does not exist")


def assert_one_error(capsys, start):
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and captured.err.strip() == errors[0], captured.err[-2000:]
    assert errors[0].startswith(start), errors[0]
    assert captured.out == ""


def test_a_label_word_of_several_tokens_names_the_task_file(kshot, tiny_bert, tmp_path, capsys):
    path = write_task(tmp_path, mapping={"food": "foodstuffs", "sports": "sports"})
    before = sorted(tmp_path.rglob("*"))
    assert run.main(run_argv(path, kshot / "k-shot/topic/8-13", tiny_bert, tmp_path)) == 2
    assert_one_error(capsys, f"error: {path}: mapping: label word 'foodstuffs' is 3 tokens")
    assert sorted(tmp_path.rglob("*")) == before


# (a line of the data, what the error says) for the example's train file with that line appended
DATA_CASES = {
    "a label the file does not list": ('{"text": "Guitar solo.", "label": "music"}',
                                       "label 'music' is not one of ['food', 'sports']; the labels of task file"),
    "a field the row lacks": ('{"sentence": "Tea and cake.", "label": "food"}',
                              "fields 'sentence', 'label', too few for task topic: layout.text_a is 'text' (task file"),
    "not an object": ('["Tea and cake.", "food"]', "not a JSON object, got list"),
    "text not a string": ('{"text": 5, "label": "food"}', "text_a 5 is not a string (task file"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_is_one_line_and_the_generator_writes_nothing(case, tmp_path, capsys):
    line, expected = DATA_CASES[case]
    original = tmp_path / "original"
    shutil.copytree(EXAMPLE / "original", original)
    train = original / "topic" / "train.jsonl"
    train.write_text(train.read_text() + line + "\n")
    argv = ["--task_file", str(TASK_FILE), "--data_dir", str(original), "--output_dir", str(tmp_path / "out")]
    assert generate_k_shot_data.main(argv) == 2
    assert_one_error(capsys, f"error: {train}:41: {expected}")
    assert not (tmp_path / "out").exists()


def test_a_column_beyond_the_row_is_named(tmp_path, capsys):
    path = write_task(tmp_path, layout={"format": "tsv", "text_a": 0, "label": 2})
    (tmp_path / "topic").mkdir()
    (tmp_path / "topic" / "train.tsv").write_text("text\tlabel\nTea and cake.\tfood\n")
    with pytest.raises(UserError, match=r"train.tsv:2: 2 columns, too few for task topic: layout.label is 2 "
                                        rf"\(task file {path}\)"):
        read_examples(load_task_file(path), tmp_path / "topic", "train")


def test_fewer_than_k_examples_of_a_label_is_refused(tmp_path, capsys):
    argv = ["--task_file", str(TASK_FILE), "--data_dir", str(EXAMPLE / "original"), "--output_dir", str(tmp_path),
            "--k", "21"]
    assert generate_k_shot_data.main(argv) == 2
    assert_one_error(capsys, "error: ")
    assert not list(tmp_path.iterdir())


# ---- layouts -----------------------------------------------------------------------------------

def test_jsonl_layout_reads_fields_and_number_labels(tmp_path):
    path = write_task(tmp_path, labels=["0", "1"], mapping={"0": "food", "1": "sports"}, two_sentences=True,
                      manual_template="*cls*{P}*sent_0**mask*,*+sentl_1**sep+*",
                      layout={"format": "jsonl", "text_a": "premise", "text_b": "hypothesis", "label": "gold"})
    (tmp_path / "train.jsonl").write_text('{"premise": "A", "hypothesis": "B", "gold": 1, "id": 7}\n\n'
                                          '{"gold": 0, "hypothesis": "D", "premise": "C"}\n')
    examples = read_examples(load_task_file(path), tmp_path, "train")
    assert [(e.guid, e.text_a, e.text_b, e.label) for e in examples] == [("train-1", "A", "B", "1"),
                                                                          ("train-3", "C", "D", "0")]


def test_csv_layout_with_a_header_makes_kshot_splits(tmp_path):
    path = write_task(tmp_path, layout={"format": "csv", "header": True, "text_a": 1, "label": 0})
    folder = tmp_path / "original" / "topic"
    folder.mkdir(parents=True)
    for split in ("train", "dev"):
        lines = (EXAMPLE / "original" / "topic" / f"{split}.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        (folder / f"{split}.csv").write_text("label,text\n" + "".join(f'{r["label"]},"{r["text"]}"\n' for r in rows))
    argv = ["--task_file", str(path), "--data_dir", str(tmp_path / "original"), "--output_dir", str(tmp_path),
            "--k", "4", "--seed", "13"]
    assert generate_k_shot_data.main(argv) == 0
    split = tmp_path / "k-shot" / "topic" / "4-13"
    task = load_task_file(path)
    train = read_examples(task, split, "train")
    assert [e.label for e in train] == ["food"] * 4 + ["sports"] * 4
    assert (split / "train.csv").read_text().startswith("label,text\n")
    assert len(read_examples(task, split, "test")) == 24  # the original dev file


# ---- a built-in row as a task file: the same features and metrics --------------------------------

def as_task_file(task, folder):
    definition = {**task.definition(), "name": f"my-{task.key}",
                  "other_tests": {split: f"my-{name}" for split, name in task.other_tests.items()}}
    path = Path(folder) / f"{task.key}.json"
    path.write_text(json.dumps(definition))
    return path


@pytest.mark.parametrize("name", ["SST-2", "MNLI"])
def test_a_builtin_task_as_a_task_file_gives_the_same_features_and_metrics(name, data_root, tiny_roberta,
                                                                             roberta_tokenizer, tmp_path):
    builtin = get_task(name)
    path = as_task_file(builtin, tmp_path)
    data = tmp_path / "data"
    shutil.copytree(data_root / "k-shot" / name / "16-13", data)
    for test in ("test_matched", "test_mismatched") if name == "MNLI" else ():
        shutil.copy(data / "dev_matched.tsv", data / f"{test}.tsv")
    mine = load_task_file(path)
    for split in ("train", "dev", "test", *builtin.other_tests):
        features = [FewShotDataset(SimpleNamespace(task_name=task.name, task=task, data_dir=data, max_seq_length=128),
                                   roberta_tokenizer, split, cache_dir=tmp_path / "cache").features
                    for task in (builtin, mine)]
        assert features[0] == features[1], split

    common = ["--data_dir", str(data), "--model_name_or_path", tiny_roberta, "--template", builtin.template("Y"),
              "--mapping", builtin.mapping, "--do_train", "--max_steps", "2", "--eval_strategy", "steps",
              "--eval_steps", "1", "--seed", "13", "--max_seq_length", "128", "--log_file", str(tmp_path / "log"),
              "--feature_cache_dir", str(tmp_path / "cache")]
    assert run.main(common + ["--task_name", name, "--output_dir", str(tmp_path / "a")]) == 0
    assert run.main(common + ["--task_file", str(path), "--output_dir", str(tmp_path / "b")]) == 0
    first, second = read_log(tmp_path / "log")
    metrics = {key: value for key, value in first.items() if METRIC_KEY.fullmatch(key)}
    renamed = {key.replace(f"{builtin.key}", f"my-{builtin.key}", 1): value for key, value in metrics.items()}
    assert {key: second[key] for key in renamed} == renamed
    assert len(metrics) == (4 if name == "MNLI" else 3)  # train, dev, test (+ the mnli-mm test set)
    assert first["task_file"] is None and second["task_file"] == json.loads(path.read_text())


# ---- run identity: the task file's content ------------------------------------------------------

def identity(argv):
    return run_identity(Experiment(*parse_args(argv)).arguments_record())


def test_run_identity_is_the_task_files_content(kshot, tiny_bert, tmp_path):
    data = kshot / "k-shot/topic/8-13"
    same = tmp_path / "copy"
    same.mkdir()
    (same / "spaced.json").write_text(json.dumps(json.loads(TASK_FILE.read_text()), indent=8))
    other = write_task(tmp_path, manual_template="*cls*{P}*sent_0*_It_is_about*mask*.*sep+*")
    reference = identity(run_argv(TASK_FILE, data, tiny_bert, tmp_path))
    assert identity(run_argv(same / "spaced.json", data, tiny_bert, tmp_path)) == reference
    assert identity(run_argv(other, data, tiny_bert, tmp_path)) != reference  # same name, other content


def test_task_name_and_task_file_must_agree(kshot, tiny_bert, tmp_path, capsys):
    argv = run_argv(TASK_FILE, kshot / "k-shot/topic/8-13", tiny_bert, tmp_path)
    assert run.main(argv + ["--task_name", "SST-2"]) == 2
    assert_one_error(capsys, f"error: --task_name SST-2 is not the task of --task_file {TASK_FILE} (topic)")
    assert run.main(argv[2:]) == 2
    assert_one_error(capsys, "error: --task_name (a built-in task) or --task_file (a task of your own) is required")


def test_every_job_line_carries_the_task_file(kshot, tmp_path):
    """A job line runs anywhere (another node, a Ray worker, a Slurm task): it names the task file itself."""
    env = dict(TASK_FILE=TASK_FILE, PRINT_JOBS=1, DATA_ROOT=kshot, K=8, SEEDS="13 42", LRS="1e-3", HARDS="Y",
               COMBOS="none bias", LOG_FILE=tmp_path / "log", RESULT_DIR=tmp_path / "result")
    result = run_script("run_one_task.sh", env)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(f"TASK_FILE={TASK_FILE} " in line and "TASK=topic " in line for line in lines)
    for job in describe_all(lines):
        assert job.setup_error is None, job.setup_error
        value = dict(zip(job.argv, job.argv[1:]))
        assert value["--task_file"] == str(TASK_FILE) and value["--task_name"] == "topic"
        assert value["--max_seq_length"] == "64"  # the file's extra_args


# ---- the example end to end: k-shot splits, a 2-run sweep, gather, table ---------------------------

@pytest.mark.slow  # two real runs through the sweep script
@pytest.mark.duration(35)
def test_the_example_end_to_end(kshot, tiny_bert, tmp_path, capsys):
    env = dict(TASK_FILE=TASK_FILE, MODEL=tiny_bert, DATA_ROOT=kshot, K=8, SEEDS="13 42", LRS="1e-3", HARDS="Y",
               COMBOS="bias", MAX_STEP=4, EVAL_STEP=2, LOG_FILE=tmp_path / "log", RESULT_DIR=tmp_path / "result")
    result = run_script("run_one_task.sh", env, f"--feature_cache_dir {tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_log(tmp_path / "log")
    assert sorted(r["seed"] for r in records) == [13, 42]
    assert all(r["task_name"] == "topic" and r["task_file"] == load_task_file(TASK_FILE).definition()
               and 0 <= r["topic_test_eval_acc"] <= 1 for r in records)
    assert "topic_test_eval_acc: " in result.stdout and "n=2 seeds" in result.stdout
    assert "| topic (acc) |  |  | " in result.stdout  # the BitFit cell of the HARD=Y block

    pending = run_script("run_one_task.sh", {**env, "PRINT_JOBS": "pending"})
    assert pending.returncode == 0 and pending.stdout == "", pending.stderr[-2000:]  # resumed by content

    condition = "{'task_name': 'topic', 'combination': 'bias'}"
    assert gather_result.main(["--log_file", str(tmp_path / "log"), "--condition", condition,
                               "--task_file", str(TASK_FILE)]) == 0
    assert "(n=2 seeds, protocol lm-bff)" in capsys.readouterr().out
    assert make_table.main(["--log_file", str(tmp_path / "log"), "--task_file", str(TASK_FILE)]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| topic (acc)")][1:]
    assert row.split("|")[4].strip()  # BitFit, HARD=Y
    assert make_table.main(["--log_file", str(tmp_path / "log"), "--task_file", str(TASK_FILE),
                            "--compare", "paper"]) == 2
    assert_one_error(capsys, "error: --compare paper: the paper's Table 2 has no row for topic (a task of your own")

    # another file of the same name: a setting of its own, which gather asks to tell apart
    other = write_task(tmp_path, manual_template="*cls*{P}*sent_0*_It_is_about*mask*.*sep+*")
    records.append({**records[0], "task_file": load_task_file(other).definition(), "seed": 21})
    (tmp_path / "log").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert gather_result.main(["--log_file", str(tmp_path / "log"), "--condition", condition]) == 2
    assert_one_error(capsys, "error: the condition matches records of task topic from different task files")
    assert gather_result.main(["--log_file", str(tmp_path / "log"), "--condition", condition,
                               "--task_file", str(TASK_FILE)]) == 0
    assert "(n=2 seeds" in capsys.readouterr().out
