"""tools/benchmark.py on the real k-shot SST-2 data (small model, CPU, one run): the speed work's thresholds.

The run takes about 1.5 minutes on 2 CPU cores (up to about 2.5 under heavy load from other processes).
"""
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.perf

TEST_EXAMPLES = 872  # SST-2 k-shot test = the original dev set


@pytest.fixture(scope="module")
def figures(data_root, tmp_path_factory):
    command = [sys.executable, "tools/benchmark.py", "--model_size", "small", "--task", "SST-2", "--device", "cpu",
               "--data_dir", str(data_root / "k-shot" / "SST-2" / "16-42"),
               "--cache_dir", str(tmp_path_factory.mktemp("benchmark-features"))]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.split("\t") for line in done.stdout.splitlines() if line.strip()]
    assert all(len(parts) == 2 for parts in lines), done.stdout
    return dict(lines)


def value(figures, name):
    return float(figures[name])


def test_runs_on_the_whole_test_set_with_the_real_vocabulary(figures):
    assert int(figures["test_examples"]) == TEST_EXAMPLES
    assert int(figures["vocab_size"]) >= 50262
    assert figures["device"] == "cpu" and figures["memory_measure"] == "peak_rss_above_baseline"


def test_evaluation_at_least_4x_faster_than_max_length_padding(figures):
    assert value(figures, "eval_speedup_vs_max_length_padding") >= 4.0


def test_evaluation_at_least_1_5x_plain_hf_forward(figures):
    assert value(figures, "eval_throughput_ratio_vs_plain_hf") >= 1.5


def test_prompt_and_bias_training_at_least_1_3x_faster_than_all(figures):
    assert value(figures, "train_speedup_prompt_vs_all") >= 1.3
    assert value(figures, "train_speedup_bias_vs_all") >= 1.3


def test_adapter_training_peak_memory_at_most_0_7_of_all(figures):
    assert value(figures, "peak_memory_mb_all") > 0
    assert value(figures, "peak_memory_ratio_adapter_vs_all") <= 0.7


def test_fast_logits_match_reference_mode_in_fp32(figures):
    assert figures["bf16"] == "False"
    assert value(figures, "max_abs_logit_diff_fast_vs_reference") <= 1e-4
