"""The README's first command: the offline quick start on the shipped SST-2 split and the MiniLM encoder
(here with 4 steps instead of 100; README gives the full run's figures)."""
import hashlib
import json

import run
from examples.quickstart import ARGUMENTS, HERE


def test_shipped_split_matches_the_published_checksums(data_root):
    split = HERE / "SST-2/16-42"
    shipped = dict(line.split()[::-1] for line in (split / "checksum").read_text().splitlines())
    published = dict(line.split()[::-1] for line in (data_root / "k-shot/checksum").read_text().splitlines())
    assert sorted(shipped) == ["dev.tsv", "test.tsv", "train.tsv"]
    for name, md5 in shipped.items():
        assert hashlib.md5((split / name).read_bytes()).hexdigest() == md5 == published[f"SST-2/16-42/{name}"]


def test_quickstart_runs_offline_and_prints_a_result_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code = run.main(ARGUMENTS + ["--max_steps", "4", "--eval_steps", "2", "--output_dir", str(tmp_path / "out"),
                                 "--log_file", str(tmp_path / "log")])
    out = capsys.readouterr().out
    assert code == 0
    [line] = [line for line in out.splitlines() if line.startswith("result: ")]
    assert line.startswith("result: SST-2 bias,adapter dev acc ") and "(majority class 0.5092)" in line
    [record] = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert record["tag"] == "quickstart" and 0 <= record["sst-2_test_eval_acc"] <= 1
    assert (tmp_path / "out/delta.safetensors").is_file()
