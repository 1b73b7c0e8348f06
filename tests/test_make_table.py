"""make_table: every cell of both blocks from a hand-made log, the Average row, Markdown and LaTeX."""
import re

import pytest

from src.delta import combination_title, paper_combinations
from src.results import append_result
from src.tasks import get_task
from src.templates import parse_template
from src.table import build_table, column_of
from tools.make_table import main

COLUMNS = ["none"] + [combination_title(c) for c in paper_combinations()]

TASKS = ("SST-2", "CoLA")
PERCENT = {"none": 0.0, "Adapter": 1.754, "BitFit": 0.091, "BitFit+Adapter": 1.843, "Prompt": 0.0029,
           "Prompt+Adapter": 1.757, "Prompt+BitFit": 0.094, "Prompt+BitFit+Adapter": 1.846}
PARAMS = {"Adapter": "adapter", "BitFit": "bias", "BitFit+Adapter": "adapter,bias", "Prompt": "prompt",
          "Prompt+Adapter": "adapter,prompt", "Prompt+BitFit": "prompt,bias",
          "Prompt+BitFit+Adapter": "bias,prompt,adapter", "none": "prompt"}


def expected(task, hard, c):
    """The planted cell (percent): column c of COLUMNS; seeds 13/42 sit at mean ∓ std."""
    mean = 40 + 5 * c + 2 * (hard == "Y") + 10 * (task == "sst-2")
    return mean, 0.5 * (c + 1)


def tasks(names):
    return [get_task(name) for name in names]


def pair(cell):
    return cell.mean, cell.std


def records():
    out = []
    for name in TASKS:
        task = get_task(name)
        metric = task.main_metric
        for hard in "YN":
            for c, column in enumerate(COLUMNS):
                mean, std = expected(task.key, hard, c)
                params = PARAMS[column]
                for seed, sign in ((13, -1), (42, 1)):
                    base = {"task_name": task.key, "tag": "t", "seed": seed, "do_train": column != "none",
                            "training_params": params, "template": task.template(hard, "prompt" in params),
                            "trainable_percent": PERCENT[column], "per_device_train_batch_size": 4}
                    test = (mean + sign * std) / 100
                    # the chosen run (best dev) and a worse-dev run at another learning rate
                    out.append(dict(base, learning_rate=1e-3, **{f"{task.key}_dev_eval_{metric}": .9,
                                                                 f"{task.key}_test_eval_{metric}": test}))
                    out.append(dict(base, learning_rate=1e-4, **{f"{task.key}_dev_eval_{metric}": .1,
                                                                 f"{task.key}_test_eval_{metric}": .99}))
    noise = dict(out[-1], **{"sst-2_test_eval_acc": .01})
    out.append(dict(noise, training_params="prompt bias adapter"))  # multi-stage: not in the table
    out.append(dict(noise, tag="other"))
    out.append(dict(noise, training_params="all"))
    return out


def test_templates_are_classified_into_blocks():
    for name in ("SST-2", "CoLA", "MRPC", "MNLI", "trec"):
        task = get_task(name)
        for prompt in (False, True):
            assert parse_template(task.template("Y", prompt)).hard == "Y"
            assert parse_template(task.template("N", prompt)).hard == "N"
    assert parse_template("*cls**sent_0**sep**mask**sep+*").hard == "N"
    assert parse_template("*cls**sent_0*_It_was*mask*.*sep+*").hard == "Y"
    assert parse_template("*cls**sent_0**mask*,*+sentl_1**sep+*").hard == "Y"  # an edited sentence


def test_columns_come_from_the_records_combination():
    assert column_of({"do_train": True, "training_params": "adapter,bias"}) == "bias,adapter"
    assert column_of({"do_train": True, "training_params": "bias,adapter"}) == "bias,adapter"
    assert column_of({"do_train": False, "training_params": "bias"}) == "none"
    assert column_of({"do_train": True, "training_params": "prompt bias"}) is None
    assert column_of({"do_train": True, "training_params": "all"}) is None
    assert column_of({"do_train": True, "training_params": "lora,prompt"}) == "prompt,lora"


def test_every_cell_and_the_average_row():
    table = build_table(records(), tasks(TASKS), tag="t")
    assert [block.hard for block in table.blocks] == ["N", "Y"]
    for block in table.blocks:
        labels = [row.label for row in block.rows]
        assert labels == ["SST-2 (acc)", "CoLA (mcc)", "Average"]
        for row, key in zip(block.rows, ("sst-2", "cola")):
            for c, cell in enumerate(row.cells):
                assert pair(cell) == pytest.approx(expected(key, block.hard, c))
        average = block.rows[-1].cells
        for c, cell in enumerate(average):  # mean of the two task means ± mean of their (equal) stds
            sst, cola = expected("sst-2", block.hard, c), expected("cola", block.hard, c)
            assert pair(cell) == pytest.approx(((sst[0] + cola[0]) / 2, sst[1]))
    assert [column.tunable for column in table.columns] == pytest.approx([PERCENT[c] for c in COLUMNS])


def test_average_is_blank_where_a_task_has_no_cell():
    rows = [r for r in records() if not (r["task_name"] == "cola" and r["training_params"] == "adapter")]
    block = build_table(rows, tasks(TASKS), tag="t").blocks[0]
    assert block.rows[1].cells[1] is None and block.rows[2].cells[1] is None
    assert block.rows[2].cells[2] is not None


def test_reference_protocol_picks_learning_rate_by_test():
    cell = build_table(records(), tasks(["SST-2"]), tag="t", protocol="reference").blocks[0].rows[0].cells[1]
    assert pair(cell) == pytest.approx((99.0, 0.0))


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "log"
    for record in records():
        append_result(path, record)
    return str(path)


def test_markdown(log, capsys):
    assert main(["--log_file", log, "--task", *TASKS, "--tag", "t"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Protocol: lm-bff; data: 16-shot"
    assert lines[2] == "| Task | " + " | ".join(COLUMNS) + " |"
    assert lines[4] == "| Tunable % | 0% | 1.75% | 0.09% | 1.84% | 0.003% | 1.76% | 0.09% | 1.85% |"
    assert lines[5].startswith("| *without templates (HARD=N)* |")
    assert lines[6] == ("| SST-2 (acc) | 50.0±0.5 | 55.0±1.0 | 60.0±1.5 | 65.0±2.0 | 70.0±2.5 | 75.0±3.0 "
                        "| 80.0±3.5 | 85.0±4.0 |")
    assert lines[8] == ("| Average | 45.0±0.5 | 50.0±1.0 | 55.0±1.5 | 60.0±2.0 | 65.0±2.5 | 70.0±3.0 "
                        "| 75.0±3.5 | 80.0±4.0 |")
    assert lines[9].startswith("| *with templates (HARD=Y)* |")
    assert lines[11].startswith("| CoLA (mcc) | 42.0±0.5 | 47.0±1.0 |")


def test_latex_is_a_well_formed_tabular(log, capsys):
    assert main(["--log_file", log, "--task", *TASKS, "--tag", "t", "--latex"]) == 0
    out = capsys.readouterr().out
    body = re.search(r"\\begin\{tabular\}\{(\w+)\}\n(.*)\n\\end\{tabular\}$", out.strip(), re.S)
    assert body and body.group(1) == "l" + "c" * 8
    rows = [line for line in body.group(2).splitlines() if line != r"\hline"]
    assert len(rows) == 2 + 2 * (1 + 3)  # header, tunable; per block: title + 2 tasks + average
    for row in rows:
        assert row.endswith(r" \\")
        span = re.match(r"\\multicolumn\{(\d+)\}", row)
        cells = re.split(r"(?<!\\)&", row[:-3])
        assert (int(span.group(1)) if span else len(cells)) == 9
        assert "%" not in row.replace(r"\%", "")
    assert r"50.0$\pm$0.5" in out and r"Tunable \% & 0\% & 1.75\%" in out


def test_no_matching_record_exits_1(log, capsys):
    assert main(["--log_file", log, "--task", "MRPC"]) == 1
    assert main(["--log_file", log, "--task", "nope"]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_other_registry_combinations_become_columns_after_the_papers():
    lora = [dict(r, training_params=r["training_params"].replace("adapter", "lora"))
            for r in records() if r["training_params"] in ("adapter", "adapter,prompt")]
    table = build_table(records() + lora, tasks(TASKS), tag="t")
    assert [column.title for column in table.columns] == COLUMNS + ["LoRA", "Prompt+LoRA"]
    assert all(cell is not None for block in table.blocks for row in block.rows for cell in row.cells)


def test_a_table_holds_one_data_setting(tmp_path, capsys):
    """Full-data runs (--dev_as_test) and 16-shot runs never share a table: --setting picks one, and
    a log holding both needs it."""
    full = [dict(r, dev_as_test=True, **{k: v - .2 for k, v in r.items() if "_test_eval_" in k}) for r in records()]
    assert build_table(records() + full, tasks(TASKS), tag="t", setting="16-shot").blocks == \
        build_table(records(), tasks(TASKS), tag="t").blocks
    cell = build_table(records() + full, tasks(["SST-2"]), tag="t", setting="full").blocks[0].rows[0].cells[1]
    assert pair(cell) == pytest.approx((expected("sst-2", "N", 1)[0] - 20, expected("sst-2", "N", 1)[1]))
    path = tmp_path / "log"
    for record in records() + full:
        append_result(path, record)
    assert main(["--log_file", str(path), "--task", *TASKS, "--tag", "t"]) == 2
    assert "several data settings for these tasks (16-shot, full): choose one with --setting" in capsys.readouterr().err
    assert main(["--log_file", str(path), "--task", *TASKS, "--tag", "t", "--setting", "full"]) == 0
    assert capsys.readouterr().out.startswith("Protocol: lm-bff; data: full\n")
