"""FewShotDataset (prompt, finetune, prompt-demo), its feature cache, and the collator."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from src.dataset import Collator, FewShotDataset, default_cache_dir
from src.errors import UserError
from src.tasks import get_task, read_examples
from src.templates import encode, label_word_ids, parse_mapping


def make_args(task_name, data_dir, **overrides):
    args = dict(task_name=task_name, data_dir=str(data_dir), template=None, mapping=None, few_shot_type="prompt",
                max_seq_length=128, first_sent_limit=None, other_sent_limit=None, truncate_head=False,
                prompt_num=10, num_sample=4, num_demo=1, demo_filter=False, demo_filter_model="sbert",
                demo_filter_rate=0.5, double_demo=False, seed=13, overwrite_cache=False)
    args.update(overrides)
    return SimpleNamespace(**args)


def kshot(data_root, task_name):
    return data_root / "k-shot" / task_name / "16-13"


@pytest.fixture(params=["roberta", "bert"])
def tokenizer(request):
    return request.getfixturevalue(f"{request.param}_tokenizer")


def write_sst2(directory, splits):
    """A small SST-2-shaped data set: {split: [(sentence, label), ...]}."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        lines = ["sentence\tlabel"] + [f"{sentence}\t{label}" for sentence, label in rows]
        (directory / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return directory


TRAIN = [("alpha is dull", 0), ("beta is dull", 0), ("gamma is fun", 1), ("delta is fun", 1)]


# -- prompt and finetune features -----------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["SST-2", "MNLI", "STS-B", "trec"])
@pytest.mark.parametrize("template_kind", ["Y", "N"])
def test_prompt_features(task_name, template_kind, tokenizer, data_root, tmp_path):
    task = get_task(task_name)
    args = make_args(task_name, kshot(data_root, task_name), template=task.template(template_kind, prompt=True))
    dataset = FewShotDataset(args, tokenizer, "dev", cache_dir=tmp_path)
    examples = read_examples(task, kshot(data_root, task_name), "dev")
    assert len(dataset) == len(examples) and dataset.num_sample == 1
    expected_labels = [e.label if task.regression else task.labels.index(e.label) for e in examples]
    assert list(dataset.labels) == expected_labels
    for item, label in zip(dataset, expected_labels):
        assert item["labels"] == label and type(item["labels"]) is (float if task.regression else int)
        assert item["input_ids"][item["mask_pos"]] == tokenizer.mask_token_id
        assert item["input_ids"][1:11] == list(range(-1, -11, -1))
        assert len(item["input_ids"]) == len(item["attention_mask"]) <= 128
        assert ("token_type_ids" in item) == (tokenizer.cls_token == "[CLS]")


@pytest.mark.parametrize("task_name", ["SST-2", "RTE"])
def test_finetune_features(task_name, tokenizer, data_root, tmp_path):
    args = make_args(task_name, kshot(data_root, task_name), few_shot_type="finetune", max_seq_length=40)
    dataset = FewShotDataset(args, tokenizer, "train", cache_dir=tmp_path)
    example = read_examples(task_name, kshot(data_root, task_name), "train")[0]
    item = dataset[0]
    assert "mask_pos" not in item and len(item["input_ids"]) <= 40
    assert item["input_ids"] == tokenizer(example.text_a, example.text_b, truncation=True, max_length=40)["input_ids"]
    assert item["input_ids"].count(tokenizer.sep_token_id) == (1 if example.text_b is None else
                                                               2 + (tokenizer.cls_token == "<s>"))
    if tokenizer.cls_token == "[CLS]":
        assert (1 in item["token_type_ids"]) == (example.text_b is not None)


# -- demonstrations -------------------------------------------------------------------------------

def sep_positions(item, tokenizer):
    return [i for i, token in enumerate(item["input_ids"]) if token == tokenizer.sep_token_id]


def test_demo_features_example_major(tokenizer, data_root, tmp_path):
    task = get_task("trec")
    args = make_args("trec", kshot(data_root, "trec"), few_shot_type="prompt-demo", double_demo=True)
    dataset = FewShotDataset(args, tokenizer, "dev", cache_dir=tmp_path)
    examples = read_examples(task, kshot(data_root, "trec"), "dev")
    assert dataset.num_sample == 4 and len(dataset) == 4 * len(examples) == 4 * len(dataset.labels)
    label_words = label_word_ids(tokenizer, parse_mapping(task.mapping, task.labels), task.labels)
    for index in (0, 37, len(examples) - 1):
        query = encode([examples[index].text_a], task.template("Y"), tokenizer, 256)["input_ids"]
        samples = [dataset[index * 4 + k] for k in range(4)]
        for item in samples:
            assert item["input_ids"][:len(query)] == query   # the query first, then its demonstrations
            assert item["labels"] == dataset.labels[index] == task.labels.index(examples[index].label)
            seps = sep_positions(item, tokenizer)
            assert len(seps) == 1 + len(task.labels)        # one demonstration per class, in class order
            assert [item["input_ids"][i + 1] for i in seps[:-1]] == label_words
            assert len(item["input_ids"]) <= 256             # double_demo doubles max_seq_length
        assert len({tuple(item["input_ids"]) for item in samples}) > 1


def test_demo_train_split_has_one_set_per_example_and_never_itself(roberta_tokenizer, tmp_path):
    data = write_sst2(tmp_path / "data", {"train": TRAIN})
    args = make_args("SST-2", data, few_shot_type="prompt-demo", template="*cls**sent_0*_It_was*mask*.*sep+*")
    dataset = FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path / "cache")
    assert dataset.num_sample == 1 and len(dataset) == len(TRAIN)
    # each class has two train examples, so the same-class demonstration is always the other one
    other = {"alpha is dull": "beta is dull", "beta is dull": "alpha is dull",
             "gamma is fun": "delta is fun", "delta is fun": "gamma is fun"}
    for (sentence, label), item in zip(TRAIN, dataset):
        query, class0_demo, class1_demo, end = roberta_tokenizer.decode(item["input_ids"]).split("</s>")
        assert query == f"<s>{sentence} It was<mask>." and end == ""
        assert class0_demo.endswith(" It was terrible.") and class1_demo.endswith(" It was great.")
        assert [class0_demo, class1_demo][label] == f"{other[sentence]} It was {['terrible', 'great'][label]}."


def test_demo_sampling_is_deterministic_in_the_seed(roberta_tokenizer, data_root, tmp_path):
    def build(seed):  # overwrite_cache: sample afresh every time
        args = make_args("SST-2", kshot(data_root, "SST-2"), few_shot_type="prompt-demo", seed=seed,
                         overwrite_cache=True)
        return [item["input_ids"] for item in FewShotDataset(args, roberta_tokenizer, "dev", cache_dir=tmp_path)]
    assert build(13) == build(13)
    assert build(13) != build(21)


def test_demo_filter_keeps_the_most_similar(roberta_tokenizer, tmp_path):
    dev = [("epsilon is dull", 0)]
    data = write_sst2(tmp_path / "data", {"train": TRAIN, "dev": dev})
    np.save(data / "train_sbert.npy", np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.1]]))
    np.save(data / "dev_sbert.npy", np.array([[1.0, 0.05]]))
    args = make_args("SST-2", data, few_shot_type="prompt-demo", demo_filter=True, demo_filter_rate=0.5,
                     template="*cls**sent_0*_It_was*mask*.*sep+*")
    dataset = FewShotDataset(args, roberta_tokenizer, "dev", cache_dir=tmp_path / "cache")
    expected = "<s>epsilon is dull It was<mask>.</s>alpha is dull It was terrible.</s>delta is fun It was great.</s>"
    assert [roberta_tokenizer.decode(item["input_ids"]) for item in dataset] == [expected] * 4


def test_demo_filter_needs_its_embeddings(roberta_tokenizer, tmp_path):
    data = write_sst2(tmp_path / "data", {"train": TRAIN})
    args = make_args("SST-2", data, few_shot_type="prompt-demo", demo_filter=True)
    with pytest.raises(UserError, match="train_sbert.npy"):
        FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path / "cache")


# -- cache -----------------------------------------------------------------------------------------

def cache_files(directory):
    return sorted(directory.glob("cached_*.json"))


def test_cache_is_named_and_reused(roberta_tokenizer, data_root, tmp_path, monkeypatch):
    args = make_args("SST-2", kshot(data_root, "SST-2"))
    first = FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path)
    [path] = cache_files(tmp_path)
    assert path.name.startswith("cached_train_RobertaTokenizerFast_128_SST-2_")
    mtime = path.stat().st_mtime_ns

    def must_not_build(self):
        raise AssertionError("features were rebuilt although the cache is valid")
    monkeypatch.setattr(FewShotDataset, "_build_features", must_not_build)
    second = FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path)
    assert second.features == first.features and path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("change", [
    {"template": "*cls**sent_0*_This_was*mask*.*sep+*"},
    {"mapping": "{'0':'bad','1':'good'}"},
    {"max_seq_length": 64},
    {"prompt_num": 5},
    {"first_sent_limit": 10},
    {"truncate_head": True},
    {"few_shot_type": "finetune"},
    {"seed": 21},
])
def test_every_setting_changes_the_cache_file(change, roberta_tokenizer, data_root, tmp_path):
    base = make_args("SST-2", kshot(data_root, "SST-2"))
    FewShotDataset(base, roberta_tokenizer, "train", cache_dir=tmp_path)
    changed = FewShotDataset(make_args("SST-2", kshot(data_root, "SST-2"), **change), roberta_tokenizer, "train",
                             cache_dir=tmp_path)
    assert len(cache_files(tmp_path)) == 2
    if "template" in change:
        assert changed.features != FewShotDataset(base, roberta_tokenizer, "train", cache_dir=tmp_path).features


def test_tokenizer_changes_the_cache_file(roberta_tokenizer, bert_tokenizer, data_root, tmp_path):
    args = make_args("SST-2", kshot(data_root, "SST-2"))
    FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path)
    FewShotDataset(args, bert_tokenizer, "train", cache_dir=tmp_path)
    assert len(cache_files(tmp_path)) == 2


def test_corrupt_cache_is_rebuilt_with_a_warning(roberta_tokenizer, data_root, tmp_path, capsys):
    args = make_args("SST-2", kshot(data_root, "SST-2"))
    fresh = FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path).features
    [path] = cache_files(tmp_path)
    path.write_text('{"key": {"trunc')
    rebuilt = FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path)
    assert capsys.readouterr().err.startswith(f"warning: feature cache {path} is unreadable")
    assert rebuilt.features == fresh
    assert FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path).features == fresh


def test_overwrite_cache_rebuilds(roberta_tokenizer, data_root, tmp_path, monkeypatch):
    args = make_args("SST-2", kshot(data_root, "SST-2"))
    FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path)
    builds = []
    original = FewShotDataset._build_features
    monkeypatch.setattr(FewShotDataset, "_build_features", lambda self: builds.append(1) or original(self))
    FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path)
    assert builds == []
    args.overwrite_cache = True
    FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path)
    assert builds == [1]


def test_cache_defaults_to_the_user_cache_folder_not_the_data(roberta_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    data = write_sst2(tmp_path / "data", {"train": TRAIN})
    FewShotDataset(make_args("SST-2", data), roberta_tokenizer, "train")
    assert default_cache_dir() == tmp_path / "user-cache/delta-tuning/features"
    assert len(cache_files(default_cache_dir())) == 1 and cache_files(data) == []


def test_unwritable_cache_directory_builds_uncached(roberta_tokenizer, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    data = write_sst2(tmp_path / "data", {"train": TRAIN})
    monkeypatch.setattr("src.dataset.os.access", lambda path, mode: False)
    dataset = FewShotDataset(make_args("SST-2", data), roberta_tokenizer, "train")
    assert capsys.readouterr().err.startswith("warning: cannot write the feature cache in ")
    assert len(dataset) == len(TRAIN) and cache_files(data) == []


def test_changed_data_changes_the_cache_file(roberta_tokenizer, tmp_path):
    data = write_sst2(tmp_path / "data", {"train": TRAIN})
    FewShotDataset(make_args("SST-2", data), roberta_tokenizer, "train", cache_dir=tmp_path / "cache")
    write_sst2(data, {"train": TRAIN[:3]})
    assert len(FewShotDataset(make_args("SST-2", data), roberta_tokenizer, "train", cache_dir=tmp_path / "cache")) == 3


# -- bad input -------------------------------------------------------------------------------------

def test_unknown_mode_and_missing_data_are_user_errors(roberta_tokenizer, data_root, tmp_path):
    with pytest.raises(UserError, match="'demo'"):
        FewShotDataset(make_args("SST-2", kshot(data_root, "SST-2"), few_shot_type="demo"), roberta_tokenizer, "train",
                       cache_dir=tmp_path)
    with pytest.raises(UserError, match="nowhere"):
        FewShotDataset(make_args("SST-2", tmp_path / "nowhere"), roberta_tokenizer, "train", cache_dir=tmp_path)
    with pytest.raises(UserError, match="'SST-3'"):
        FewShotDataset(make_args("SST-3", tmp_path), roberta_tokenizer, "train", cache_dir=tmp_path)


# -- collator --------------------------------------------------------------------------------------

ITEMS = [
    {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 1], "mask_pos": 1, "labels": 1},
    {"input_ids": [8], "attention_mask": [1], "token_type_ids": [0], "mask_pos": 0, "labels": 0},
]


def test_collator_pads_to_the_longest():
    batch = Collator(pad_token_id=9)(ITEMS)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert batch["mask_pos"].tolist() == [1, 0] and batch["mask_pos"].dtype == torch.long
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long


def test_collator_reference_mode_pads_to_a_fixed_length():
    batch = Collator(pad_token_id=9, pad_to=5)(ITEMS)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 9, 9], [8, 9, 9, 9, 9]]
    with pytest.raises(UserError, match="pad_to=2"):
        Collator(pad_token_id=9, pad_to=2)(ITEMS)


def test_collator_float_labels_and_finetune_items(roberta_tokenizer, data_root, tmp_path):
    args = make_args("STS-B", kshot(data_root, "STS-B"), few_shot_type="finetune")
    dataset = FewShotDataset(args, roberta_tokenizer, "train", cache_dir=tmp_path)
    batch = Collator(roberta_tokenizer.pad_token_id)([dataset[0], dataset[1]])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == pytest.approx([3.2, 3.875])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}


def test_sts_b_demonstrations_split_at_the_fixed_threshold(roberta_tokenizer, tmp_path):
    """LM-BFF's fixed split 2.5 with `<=`: a score of exactly 2.5 is low; 3.0 (the median here) is high."""
    scores = {"alpha": 1.0, "edge": 2.5, "mid": 3.0, "high": 4.0, "top": 4.5}
    data = tmp_path / "data"
    data.mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    for split, rows in {"train": scores, "dev": {"query": 2.0}}.items():
        lines = [header] + [f"{i}\tg\tf\ty\to\ts1\ts2\t{word} one\t{word} two\t{score}"
                            for i, (word, score) in enumerate(rows.items())]
        (data / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    args = make_args("STS-B", data, few_shot_type="prompt-demo", num_sample=16)
    dataset = FewShotDataset(args, roberta_tokenizer, "dev", cache_dir=tmp_path / "cache")
    low, high = set(), set()
    for item in dataset:
        parts = roberta_tokenizer.decode(item["input_ids"]).split("</s>")
        low.add(parts[1].split()[0])
        high.add(parts[2].split()[0])
    assert low <= {"alpha", "edge"} and high <= {"mid", "high", "top"}
    assert "edge" in low and "mid" in high
