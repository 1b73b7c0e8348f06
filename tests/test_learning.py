"""Learning with real weights: the pretrained MiniLM BERT encoder (fresh MLM head) on full SST-2.

Trains only the delta for a few minutes on CPU and must beat the 50.9% majority class clearly.
"""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from src.random_models import minilm_dir

MAJORITY = 0.509


@pytest.mark.slow
@pytest.mark.duration(85)
@pytest.mark.parametrize("training_params", ["adapter", "bias,adapter"])
def test_delta_training_learns_sst2(training_params, data_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("learn")
    cache = tmp_path_factory.getbasetemp() / "learn-cache"  # shared: tokenise 67k sentences once
    command = [sys.executable, str(ROOT / "run.py"), "--task_name", "SST-2",
               "--data_dir", str(data_root / "original/SST-2"), "--dev_as_test", "--skip_train_eval",
               "--model_name_or_path", str(minilm_dir()), "--do_train", "--eval_strategy", "steps",
               "--max_steps", "200", "--eval_steps", "100", "--per_device_train_batch_size", "8",
               "--per_device_eval_batch_size", "64", "--learning_rate", "1e-3", "--max_seq_length", "64",
               "--template", "*cls**sent_0*_It_was*mask*.*sep+*", "--mapping", "{'0':'terrible','1':'great'}",
               "--training_params", training_params, "--seed", "13", "--disable_tqdm", "true",
               "--output_dir", str(workdir / "out"), "--feature_cache_dir", str(cache)]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((workdir / "log").read_text())
    print(f"{training_params}: dev acc {record['sst-2_dev_eval_acc']:.4f}, "
          f"history {record['stages'][0]['eval_history']}, wall {record['wall_time']} s")
    assert record["sst-2_dev_eval_acc"] > MAJORITY + 0.15
