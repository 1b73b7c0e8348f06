"""gather_result: the two selection protocols on a hand-made log, condition parsing, the CLI."""
import pytest

from src.errors import UserError
from src.results import append_result
from src.summary import gather
from tools.gather_result import main, parse_condition


def run(task, seed, lr, dev, test, metric="acc", **extra):
    return {"task_name": task, "tag": "exp", "seed": seed, "learning_rate": lr, "per_device_train_batch_size": 4,
            "do_train": True, "output_dir": f"result/{task}-{seed}-{lr}", "time": f"t{seed}{lr}",
            f"{task}_dev_eval_{metric}": dev, f"{task}_test_eval_{metric}": test, **extra}


# SST-2, 3 seeds × 2 learning rates (dev, test):
#   seed  lr=1e-3       lr=1e-4
#   13    (.90, .80)    (.85, .90)
#   42    (.88, .82)    (.86, .88)
#   100   (.80, .84)    (.87, .86)
# lm-bff: best dev per seed → 1e-3, 1e-3, 1e-4 → tests .80 .82 .86
#   mean = 2.48/3 = .826667; deviations -.026667 -.006667 +.033333; population var = .0018667/3
#   = .00062222; std = .024944 → 82.67 ± 2.49
# reference: mean test of 1e-3 = .82, of 1e-4 = .88 → 1e-4; tests .90 .88 .86
#   mean .88; var = (.0004 + 0 + .0004)/3 = .00026667; std = .016330 → 88.00 ± 1.63
SST2 = [run("sst-2", 13, 1e-3, .90, .80), run("sst-2", 13, 1e-4, .85, .90),
        run("sst-2", 42, 1e-3, .88, .82), run("sst-2", 42, 1e-4, .86, .88),
        run("sst-2", 100, 1e-3, .80, .84), run("sst-2", 100, 1e-4, .87, .86)]
NOISE = [run("sst-2", 13, 1e-3, .99, .99, tag="other"), run("cola", 13, 1e-3, .5, .4, metric="mcc"),
         run("sst-2", 13, 1e-3, .99, .99, do_train=False)]
MNLI = [run("mnli", 13, 1e-3, .70, .71, **{"mnli-mm_test_eval_acc": .72}),
        run("mnli", 13, 1e-4, .75, .73, **{"mnli-mm_test_eval_acc": .74})]
RECORDS = SST2 + NOISE + MNLI
CONDITION = {"task_name": "sst-2", "tag": "exp", "do_train": True}


def test_lm_bff_picks_the_best_dev_run_per_seed():
    result = gather(RECORDS, CONDITION)
    assert [(row["seed"], row["test"], row["setting"]["learning_rate"]) for row in result["per_seed"]] == [
        (13, .80, 1e-3), (42, .82, 1e-3), (100, .86, 1e-4)]
    assert result["mean"] == pytest.approx(.826667, abs=1e-6)
    assert result["std"] == pytest.approx(.024944, abs=1e-6)
    assert (result["n"], result["protocol"], result["setting"]) == (3, "lm-bff", None)


def test_reference_picks_the_setting_with_the_best_mean_test():
    result = gather(RECORDS, CONDITION, protocol="reference")
    assert [row["test"] for row in result["per_seed"]] == [.90, .88, .86]
    assert result["mean"] == pytest.approx(.88)
    assert result["std"] == pytest.approx(.016330, abs=1e-6)
    assert result["setting"] == {"learning_rate": 1e-4, "per_device_train_batch_size": 4}


def test_other_varying_hyper_parameters_are_part_of_the_setting():
    records = [dict(r, max_steps=1000) for r in SST2] + [run("sst-2", s, 1e-3, .5, .95, max_steps=2000)
                                                       for s in (13, 42, 100)]
    result = gather(records, CONDITION, protocol="reference")
    assert result["setting"] == {"learning_rate": 1e-3, "per_device_train_batch_size": 4, "max_steps": 2000}
    assert result["mean"] == pytest.approx(.95)


def test_zero_shot_records_form_one_setting():
    records = [run("sst-2", s, lr, .6, .5 + s / 1000, do_train=False) for s in (13, 42) for lr in (1e-3, 1e-4)]
    result = gather(records, {"task_name": "sst-2"}, protocol="reference")
    assert result["setting"] == {"zero_shot": True}
    assert [row["test"] for row in result["per_seed"]] == [.513, .542]


def test_mnli_selects_on_matched_dev_and_can_report_mismatched_test():
    assert gather(RECORDS, {"task_name": "mnli"}, key="acc")["mean"] == pytest.approx(.73)
    result = gather(RECORDS, {"task_name": "mnli"}, key="acc", test_task="mnli-mm")
    assert (result["dev_metric"], result["test_metric"], result["mean"]) == (
        "mnli_dev_eval_acc", "mnli-mm_test_eval_acc", pytest.approx(.74))
    with pytest.raises(UserError, match="not a test set"):
        gather(RECORDS, {"task_name": "mnli"}, test_task="sst-2")


def test_no_match_missing_metric_and_ambiguous_task():
    assert gather(RECORDS, {"task_name": "qqp"}) is None
    with pytest.raises(UserError, match="sst-2_dev_eval_f1"):
        gather(RECORDS, CONDITION, key="f1")
    with pytest.raises(UserError, match="several tasks"):
        gather(RECORDS, {"tag": "exp"})


@pytest.mark.parametrize("text, message", [
    ("{'task_name': ", "not a Python literal"),
    ("__import__('os').system('true')", "not a Python literal"),
    ("['sst-2']", "must be a dict"),
])
def test_bad_conditions_are_user_errors(text, message):
    with pytest.raises(UserError, match=message):
        parse_condition(text)


def test_condition_task_name_is_lower_cased():
    assert parse_condition("{'task_name': 'SST-2', 'seed': 13}") == {"task_name": "sst-2", "seed": 13}


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "log"
    for record in RECORDS:
        append_result(path, record)
    return str(path)


def test_cli_prints_per_seed_lines_and_the_summary(log, capsys):
    assert main(["--log_file", log, "--condition", str(CONDITION), "--protocol", "reference"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("protocol reference:") and "learning_rate=0.0001" in out[0]
    assert out[1].startswith("seed 13: sst-2_test_eval_acc 90.00 (dev 85.00;")
    assert out[-4:] == [
        "settings (expected seeds 13 42 100: every seed of the matching runs):",
        "  learning_rate=0.001, per_device_train_batch_size=4: test 82.00 ± 1.63, dev 86.00; 3 seeds",
        "  learning_rate=0.0001, per_device_train_batch_size=4: test 88.00 ± 1.63, dev 86.00; 3 seeds",
        "sst-2_test_eval_acc: 88.00 ± 1.63 (n=3 seeds, protocol reference)"]


def test_cli_reports_each_settings_missing_seeds(tmp_path, capsys):
    """Seed 100 ran only at lr 1e-3; --seeds adds seeds no run has."""
    path = tmp_path / "log"
    for record in SST2[:-1]:
        append_result(path, record)
    assert main(["--log_file", str(path), "--condition", str(CONDITION), "--protocol", "reference"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == [
        "  learning_rate=0.001, per_device_train_batch_size=4: test 82.00 ± 1.63, dev 86.00; 3 seeds",
        "  learning_rate=0.0001, per_device_train_batch_size=4: test 89.00 ± 1.00, dev 85.50; 2 seeds, missing 100",
        "sst-2_test_eval_acc: 89.00 ± 1.00 (n=2 seeds, missing 100, protocol reference)"]
    assert main(["--log_file", str(path), "--condition", str(CONDITION), "--seeds", "13", "21", "42", "87", "100"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-4:] == [
        "settings (expected seeds 13 21 42 87 100: --seeds):",
        "  learning_rate=0.001, per_device_train_batch_size=4: test 82.00 ± 1.63, dev 86.00; 3 seeds, missing 21 87",
        "  learning_rate=0.0001, per_device_train_batch_size=4: test 89.00 ± 1.00, dev 85.50; 2 seeds, "
        "missing 21 87 100",
        "sst-2_test_eval_acc: 82.00 ± 1.63 (n=3 seeds, missing 21 87, protocol lm-bff)"]


def test_cli_exit_codes(log, tmp_path, capsys):
    def cli(*args):
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = cli("--log_file", log, "--condition", str(CONDITION))
    assert code == 0 and out.splitlines()[-1] == "sst-2_test_eval_acc: 82.67 ± 2.49 (n=3 seeds, protocol lm-bff)"
    code, _, err = cli("--log_file", log, "--condition", "{'task_name': 'qqp'}")
    assert code == 1 and err.startswith("no record in")
    code, _, err = cli("--log_file", log, "--condition", "{'task_name'")
    assert code == 2 and err.startswith("error: --condition is not a Python literal")
    code, _, err = cli("--log_file", str(tmp_path / "missing"), "--condition", "{}")
    assert code == 2 and err.startswith("error: results log")
