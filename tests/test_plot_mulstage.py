"""plot_mulstage: a hand-made multi-stage log → one PNG with a panel per stage order."""
import itertools
import json
import os

import pytest

from src.results import append_result
from src.tasks import get_task, load_task_file
from tools.plot_mulstage import main, select_runs, stage_label

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def mulstage_record(order, lr, final_dev, max_steps=600, eval_steps=200):
    stages = []
    for i, group in enumerate(order):
        history = [[step, 0.8 + 0.02 * i + step / 1e5] for step in range(eval_steps, max_steps + 1, eval_steps)]
        dev = final_dev if i == len(order) - 1 else history[-1][1]
        stages.append({"training_params": group, "best_step": max_steps, "eval_history": history,
                       "dev": {"acc": dev}, "test": {"acc": dev - 0.01}})
    return {"task_name": "sst-2", "tag": "mul", "seed": 13, "learning_rate": lr, "max_steps": max_steps,
            "eval_steps": eval_steps, "do_train": True, "training_params": " ".join(order), "stages": stages,
            "template": "*cls*prompt*sent_0**sep+**mask**sep+*",
            "sst-2_dev_eval_acc": final_dev}


def records():
    orders = list(itertools.permutations(["prompt", "bias", "adapter"]))
    out = [mulstage_record(order, lr, 0.90 + 0.01 * k + (lr == 1e-3) * 0.005)
           for k, order in enumerate(orders) for lr in (1e-2, 1e-3)]
    out.append(dict(out[0], training_params="prompt,bias", stages=[]))  # single stage: not plotted
    return out


def test_select_runs_keeps_the_best_final_dev_per_order_and_template_kind():
    runs = select_runs(records(), get_task("SST-2"), tag="mul")
    assert len(runs) == 6 and {hard for _, hard in runs} == {"N"}
    with_template = [dict(r, template="*cls*prompt*sent_0*_It_was*mask*.*sep+*") for r in records()]
    assert len(select_runs(records() + with_template, get_task("SST-2"), tag="mul")) == 12
    assert {r["learning_rate"] for r in runs.values()} == {1e-3}
    assert select_runs(records(), get_task("SST-2"), tag="other") == {}


def test_a_task_file_draws_the_runs_of_its_content_only(tmp_path):
    """A task of your own (--task_file): the records that keep that file's content, not those of another
    file of the same task name."""
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(dict(get_task("SST-2").definition(), name="mine")))
    definition = load_task_file(task_file).definition()
    own = [dict(r, task_name="mine", mine_dev_eval_acc=r["sst-2_dev_eval_acc"], task_file=definition)
           for r in records()]
    # better scores, but another file of the same task name
    other = [dict(r, task_file=dict(definition, template="*cls**sent_0*_So*mask*.*sep+*"),
                  stages=r["stages"][:-1] + [dict(r["stages"][-1], dev={"acc": 0.99})]) for r in own if r["stages"]]
    runs = select_runs(records() + own + other, load_task_file(task_file), tag="mul")
    assert len(runs) == 6 and all(r["task_file"] == definition for r in runs.values())
    log = tmp_path / "log"
    for record in other + own:
        append_result(log, record)
    output = tmp_path / "own.png"
    assert main(["--log_file", str(log), "--task_file", str(task_file), "--tag", "mul", "--output", str(output)]) == 0
    assert output.read_bytes().startswith(PNG_SIGNATURE)


def test_stage_labels_follow_the_paper():
    assert [stage_label(p) for p in ("prompt", "bias", "adapter", "prompt,bias")] == ["PT", "BF", "AP", "PT+BF"]


def test_writes_a_png(tmp_path):
    log = tmp_path / "log"
    for record in records():
        append_result(log, record)
    output = tmp_path / "mulstage.png"
    assert main(["--log_file", str(log), "--task", "SST-2", "--tag", "mul", "--output", str(output)]) == 0
    data = output.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_no_multi_stage_record_is_a_clear_error(tmp_path, capsys):
    log = tmp_path / "log"
    append_result(log, records()[-1])
    output = tmp_path / "none.png"
    assert main(["--log_file", str(log), "--task", "SST-2", "--output", str(output)]) == 1
    assert "no multi-stage record for task SST-2" in capsys.readouterr().err
    assert not output.exists()


UNWRITABLE = {  # --output that cannot be written -> the error line (was a traceback)
    "in /proc": ("/proc/self/x.png", "error: --output: cannot write '/proc/self/x.png': [Errno 2] No such file or "
                                     "directory: '/proc/self/.x.png.{pid}.tmp'"),
    "below a file": ("{tmp}/log/x.png", "error: --output: cannot write '{tmp}/log/x.png': [Errno 17] File exists: "
                                        "'{tmp}/log'"),
    "a folder": ("{tmp}", "error: --output: '{tmp}' is not a regular file (a folder or a device)"),
    "a device": ("/dev/full", "error: --output: '/dev/full' is not a regular file (a folder or a device)"),
}


@pytest.mark.parametrize("case", UNWRITABLE)
def test_an_output_that_cannot_be_written_is_one_error_line(case, tmp_path, capsys):
    log = tmp_path / "log"
    for record in records():
        append_result(log, record)
    output, message = (text.format(tmp=tmp_path, pid=os.getpid()) for text in UNWRITABLE[case])
    assert main(["--log_file", str(log), "--task", "SST-2", "--output", output]) == 2
    assert capsys.readouterr().err.splitlines() == [message]
    assert sorted(os.listdir(tmp_path)) == ["log", "log.lock"]
