"""tools/generate_k_shot_data.py must reproduce the published LM-BFF k-shot splits byte for byte."""
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "generate_k_shot_data.py"
# Tasks whose originals are in data_root/original (see its MANIFEST.txt).
TASKS = ["SST-2", "sst-5", "mr", "cr", "mpqa", "subj", "trec", "CoLA", "MRPC", "STS-B", "RTE"]
SEEDS = ["100", "13", "21", "42", "87"]  # LM-BFF default order; CoLA depends on it


def run_generator(data_root, out_dir, tasks, seeds=SEEDS):
    cmd = [sys.executable, str(SCRIPT), "--data_dir", str(data_root / "original"),
           "--output_dir", str(out_dir), "--task", *tasks, "--seed", *seeds]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def generated(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("kshot")
    proc = run_generator(data_root, out, TASKS)
    assert proc.returncode == 0, proc.stderr
    return out / "k-shot"


@pytest.fixture(scope="module")
def checksum_lines(data_root):
    lines = (data_root / "k-shot" / "checksum").read_text().splitlines()
    return [line for line in lines if line.split()[1].split("/")[0] in TASKS]


def test_reproduces_published_checksums(generated, checksum_lines):
    assert len(checksum_lines) == len(TASKS) * len(SEEDS) * 3 == 165
    bad = []
    for line in checksum_lines:
        md5, rel = line.split()
        path = generated / rel
        if not path.is_file() or hashlib.md5(path.read_bytes()).hexdigest() != md5:
            bad.append(rel)
    assert not bad, f"{165 - len(bad)}/165 OK; mismatched: {bad}"


@pytest.mark.skipif(shutil.which("md5sum") is None, reason="md5sum not installed")
def test_md5sum_check(generated, checksum_lines, tmp_path):
    sums = tmp_path / "checksum"
    sums.write_text("\n".join(checksum_lines) + "\n")
    proc = subprocess.run(["md5sum", "-c", str(sums)], cwd=generated,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": OK\n") == 165


def test_missing_task_reported_others_generated(data_root, tmp_path):
    assert not (data_root / "original" / "QQP").exists()
    proc = run_generator(data_root, tmp_path, ["QQP", "trec"], seeds=["13"])
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "QQP" in line]
    assert len(errors) == 1 and "train.tsv" in errors[0] and "missing" in errors[0]
    for name in ("train.csv", "dev.csv", "test.csv"):
        assert (tmp_path / "k-shot" / "trec" / "16-13" / name).is_file()
    assert not (tmp_path / "k-shot" / "QQP").exists()


def test_unknown_task_is_one_line_error(data_root, tmp_path):
    proc = run_generator(data_root, tmp_path, ["NotATask", "trec"])
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "NotATask" in proc.stderr
    assert not (tmp_path / "k-shot").exists()
