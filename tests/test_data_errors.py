"""Damaged data files: every reader error is one line `path:line: what is wrong`; the k-shot generator
reports a damaged task and goes on with the others."""
import shutil

import pytest

from src.errors import UserError
from src.tasks import read_examples
from tools import generate_k_shot_data

SST2_HEADER = "sentence\tlabel\n"

DAMAGED = {  # task, file, content -> (line, message)
    "empty tsv": ("SST-2", "train.tsv", b"", 1, "no examples"),
    "header-only tsv": ("SST-2", "train.tsv", SST2_HEADER.encode(), 1, "only its header"),
    "non-UTF-8 tsv": ("SST-2", "train.tsv", SST2_HEADER.encode() + b"good film\t1\nbad \xff film\t0\n", 3, "UTF-8"),
    "unknown label": ("SST-2", "train.tsv", (SST2_HEADER + "good film\t1\nbad film\t7\n").encode(), 3, "'7'"),
    "too few columns": ("MRPC", "train.tsv", b"h\th\th\th\th\n1\tx\n", 2, "columns"),
    "STS-B score not a number": ("STS-B", "train.tsv", ("h\t" * 9 + "h\n" + "x\t" * 9 + "high\n").encode(), 2,
                                 "not a number"),
    "empty csv": ("mr", "train.csv", b"", 1, "no examples"),
    "non-UTF-8 csv": ("mr", "train.csv", b'0,"fine"\n1,"caf\xe9"\n', 2, "UTF-8"),
    "malformed csv quote": ("mr", "train.csv", b'0,"fine"\n1,"unclosed\n', 2, "malformed csv"),
    "csv row with extra fields": ("mr", "train.csv", b'0,"fine"\n1,"a","b"\n', 2, "fields"),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_damaged_split_is_one_line_with_path_and_line(case, tmp_path):
    task, name, content, line, message = DAMAGED[case]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError) as error:
        read_examples(task, tmp_path, "train")
    text = str(error.value)
    assert text.startswith(f"{tmp_path / name}:{line}: ") and message in text and "\n" not in text, text


def test_generator_reports_a_damaged_task_and_goes_on(data_root, tmp_path, capsys):
    original = tmp_path / "original"
    shutil.copytree(data_root / "original/SST-2", original / "SST-2")
    (original / "RTE").mkdir(parents=True)
    (original / "RTE/train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")  # header only
    (original / "RTE/dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    (original / "mr").mkdir()
    (original / "mr/train.csv").write_bytes(b'0,"a"\n1,"b\n')  # unclosed quote
    (original / "mr/test.csv").write_bytes(b'0,"a"\n')
    code = generate_k_shot_data.main(["--data_dir", str(original), "--output_dir", str(tmp_path / "out"),
                                      "--task", "RTE", "mr", "SST-2", "--seed", "13"])
    out, err = capsys.readouterr()
    assert code == 1
    errors = err.strip().splitlines()
    assert len(errors) == 2 and errors[0].startswith("error: RTE: ") and errors[1].startswith("error: mr: ")
    assert "SST-2: wrote 1 seed(s)" in out
    assert (tmp_path / "out/k-shot/SST-2/16-13/train.tsv").is_file()
    assert not (tmp_path / "out/k-shot/RTE").exists() and not (tmp_path / "out/k-shot/mr").exists()
