"""Features for one split of a few-shot task: examples → token ids, cached on disk; demonstrations;
and the collator that pads a batch.

Modes (SPEC §5): `prompt` renders each example through the template; `finetune` uses the
tokenizer's own pair encoding; `prompt-demo` appends sampled demonstrations (one set per example
at train time, `num_sample` sets per example otherwise, stored example-major).
"""
import dataclasses
import functools
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import Dataset

from src.errors import UserError
from src.tasks import get_task, read_examples
from src.templates import (ENCODER_VERSION, encode, label_word_ids, parse_mapping, parse_template,
                           uses_segment_ids, with_demonstrations)

FEATURES_VERSION = "2"  # bump whenever the features built here change
MODES = ("prompt", "finetune", "prompt-demo")  # --few_shot_type (SPEC §5)
PROMPT, FINETUNE, DEMO = MODES


def uses_template(few_shot_type: str) -> bool:
    """prompt and prompt-demo render inputs through a template and score label words; finetune trains a new head."""
    return few_shot_type != FINETUNE


def input_length(max_seq_length: int, few_shot_type: str, double_demo: bool) -> int:
    """Tokens per input: max_seq_length, twice that with --double_demo in prompt-demo mode."""
    return max_seq_length * (2 if double_demo and few_shot_type == DEMO else 1)


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    """Every argument that shapes the features; part of the cache key."""
    task_name: str
    max_seq_length: int
    few_shot_type: str = "prompt"
    template: str = None           # None: the task's manual (HARD=Y) template
    mapping: str = None            # None: the task's label words
    first_sent_limit: int = None
    other_sent_limit: int = None
    truncate_head: bool = False
    prompt_num: int = 10
    num_sample: int = 1
    num_demo: int = 1
    demo_filter: bool = False
    demo_filter_model: str = None
    demo_filter_rate: float = 0.5
    double_demo: bool = False
    seed: int = 42

    @classmethod
    def from_args(cls, args, task):
        """Read the settings off `args`; template and mapping default to `task`'s manual ones."""
        values = {f.name: getattr(args, f.name, f.default) for f in dataclasses.fields(cls)
                  if f.default is not dataclasses.MISSING}
        values["template"] = values["template"] or task.template("Y")
        values["mapping"] = values["mapping"] or task.mapping
        if values["few_shot_type"] not in MODES:
            raise UserError(f"unknown few_shot_type {values['few_shot_type']!r}; one of {', '.join(MODES)}")
        return cls(task_name=task.name, max_seq_length=args.max_seq_length, **values)

    @property
    def demo(self):
        return self.few_shot_type == DEMO


def default_cache_dir() -> Path:
    """The user's cache folder (e.g. ~/.cache/delta-tuning/features on Linux), never the data folder."""
    import platformdirs
    return Path(platformdirs.user_cache_dir("delta-tuning")) / "features"


class FewShotDataset(Dataset):
    """Items are dicts of lists/ints: input_ids, attention_mask, (token_type_ids), (mask_pos), labels.
    `args`: the run's data arguments, with its Task as `args.task` (default: the task named `args.task_name`)."""

    def __init__(self, args, tokenizer, split, cache_dir=None):
        self.task = getattr(args, "task", None) or get_task(args.task_name)
        self.settings = FeatureSettings.from_args(args, self.task)
        self.split = split
        self.data_dir = Path(args.data_dir)
        self.tokenizer = tokenizer
        self.examples = read_examples(self.task, self.data_dir, split)
        self.labels = np.array([self._label(example) for example in self.examples])
        demo = self.settings.demo
        self.num_sample = self.settings.num_sample if demo and split != "train" else 1
        self.support = read_examples(self.task, self.data_dir, "train") if demo else None
        self.embeddings = self._load_embeddings() if demo and self.settings.demo_filter else ()
        overwrite = getattr(args, "overwrite_cache", False)
        self.features = self._load_or_build(Path(cache_dir) if cache_dir else default_cache_dir(), overwrite)

    def __len__(self):
        return len(self.features)

    def __getitem__(self, index):
        return self.features[index]

    def _label(self, example):
        return example.label if self.task.regression else self.task.labels.index(example.label)

    # -- cache ---------------------------------------------------------------------------------

    def _load_or_build(self, directory, overwrite):
        key = self._cache_key()
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        name = (f"cached_{self.split}_{type(self.tokenizer).__name__}_{self.settings.max_seq_length}_"
                f"{self.task.name}_{digest}.json")
        path = directory / name
        if not _writable(directory):
            warn_once(f"cannot write the feature cache in {directory}; building the features uncached "
                      f"(pass a writable cache_dir)")
            return self._build_features()
        features = None
        try:
            with FileLock(str(path) + ".lock"):
                if path.is_file() and not overwrite:
                    features = _read_cache(path, key)
                if features is None:
                    features = self._build_features()
                    _write_cache(path, key, features)
        except OSError as error:  # e.g. the cache file or its lock is a folder
            warn_once(f"cannot use the feature cache {path} ({error}); building the features uncached")
        return features if features is not None else self._build_features()

    def _cache_key(self):
        data = hashlib.sha256(json.dumps([self.examples, self.support], default=dataclasses.astuple).encode())
        for embeddings in self.embeddings:
            data.update(embeddings.tobytes())
        return {
            "features_version": FEATURES_VERSION,
            "encoder_version": ENCODER_VERSION,
            "split": self.split,
            "settings": dataclasses.asdict(self.settings),
            "task": self.task.definition(),  # a task file's layout, labels, ... (a built-in row's too)
            "tokenizer": _tokenizer_fingerprint(self.tokenizer),
            "data": data.hexdigest(),
        }

    # -- features ------------------------------------------------------------------------------

    def _build_features(self):
        if not uses_template(self.settings.few_shot_type):
            return [self._finetune_features(example) for example in self.examples]
        if self.settings.demo:
            return self._demo_features()
        template = parse_template(self.settings.template)
        return [self._prompt_features(self._texts(example), template, self._label(example))
                for example in self.examples]

    def _texts(self, example):
        return [example.text_a, example.text_b] if self.task.two_sentences else [example.text_a]

    def _prompt_features(self, texts, template, label, max_seq_length=None, label_words=None):
        s = self.settings
        features = encode(texts, template, self.tokenizer, max_seq_length or s.max_seq_length,
                          prompt_num=s.prompt_num, label_words=label_words,
                          first_sent_limit=s.first_sent_limit, other_sent_limit=s.other_sent_limit,
                          truncate_head=s.truncate_head)
        features["labels"] = label
        return features

    def _finetune_features(self, example):
        encoded = self.tokenizer(example.text_a, example.text_b, truncation=True,
                                 max_length=self.settings.max_seq_length)
        features = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        if uses_segment_ids(self.tokenizer):
            features["token_type_ids"] = encoded["token_type_ids"]
        features["labels"] = self._label(example)
        return features

    # -- demonstrations ------------------------------------------------------------------------

    def _load_embeddings(self):
        """demo_filter's precomputed sentence embeddings `{file stem}_{model}.npy` (e.g.
        `dev_matched_sbert.npy`): (this split's, train's), one row per example."""
        loaded = []
        for split, rows in ((self.split, len(self.examples)), ("train", len(self.support))):
            path = self.data_dir / f"{self.task.splits[split]}_{self.settings.demo_filter_model}.npy"
            if not path.is_file():
                raise UserError(f"demo_filter embeddings not found: {path}")
            embeddings = np.load(path, allow_pickle=False)
            if embeddings.ndim != 2 or len(embeddings) != rows:
                raise UserError(f"{path} has shape {embeddings.shape}, expected {rows} rows")
            loaded.append(embeddings)
        return tuple(loaded)

    def _demo_features(self):
        s = self.settings
        candidates = self._demo_candidates()
        template = parse_template(s.template)
        mapping = parse_mapping(s.mapping, self.task.labels)
        label_words = label_word_ids(self.tokenizer, mapping, self.task.labels)
        max_seq_length = input_length(s.max_seq_length, s.few_shot_type, s.double_demo)
        per_example = 2 if self.task.two_sentences else 1
        rng = np.random.default_rng(s.seed)
        features = []
        for example, pools in zip(self.examples, candidates):
            for _ in range(self.num_sample):
                demos = [(c, int(i)) for c, pool in enumerate(pools)
                         for i in rng.choice(pool, size=s.num_demo, replace=len(pool) < s.num_demo)]
                texts = self._texts(example) + [t for _, i in demos for t in self._texts(self.support[i])]
                demo_template = with_demonstrations(template, [c for c, _ in demos], per_example)
                features.append(self._prompt_features(texts, demo_template, self._label(example),
                                                      max_seq_length, label_words))
        return features

    def _demo_candidates(self):
        """Per query example, per class: the train indices it may draw demonstrations from."""
        classes = self._demo_classes()
        by_class = [np.flatnonzero(classes == c) for c in range(len(self.task.labels))]
        similarity = self._similarity() if self.settings.demo_filter else None
        candidates = []
        for query in range(len(self.examples)):
            pools = []
            for c, pool in enumerate(by_class):
                if self.split == "train":
                    pool = pool[pool != query]  # never the example itself
                if similarity is not None and len(pool):
                    keep = max(1, int(len(pool) * self.settings.demo_filter_rate))
                    pool = pool[np.argsort(-similarity[query, pool], kind="stable")[:keep]]
                if not len(pool):
                    raise UserError(f"no train example of class {c} to use as a demonstration")
                pools.append(pool)
            candidates.append(pools)
        return candidates

    def _demo_classes(self):
        """Class of each train example. Regression (STS-B): 0 for a score <= the task's fixed
        split (LM-BFF: 2.5), else 1, so its demonstrations show the low and the high label word."""
        if self.task.regression:
            scores = np.array([e.label for e in self.support])
            return (scores > self.task.regression_split).astype(int)
        return np.array([self.task.labels.index(e.label) for e in self.support])

    def _similarity(self):
        query, support = self.embeddings
        query = query / np.linalg.norm(query, axis=1, keepdims=True).clip(min=1e-12)
        support = support / np.linalg.norm(support, axis=1, keepdims=True).clip(min=1e-12)
        return query @ support.T


def _tokenizer_fingerprint(tokenizer):
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return {"class": type(tokenizer).__name__, "name": tokenizer.name_or_path,
            "vocab": hashlib.sha256(vocab.encode()).hexdigest(),
            "special_tokens": tokenizer.all_special_tokens,
            "lower_case": getattr(tokenizer, "do_lower_case", None)}


def _writable(directory):
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


def _read_cache(path, key):
    """Cached features, or None (with a warning) when the file is unreadable or not ours."""
    try:
        with open(path, encoding="utf-8") as file:
            cached = json.load(file)
        if cached["key"] != key:
            raise ValueError("its key does not match")
        return cached["features"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        warn_once(f"feature cache {path} is unreadable ({error}); rebuilding it")
        return None


def _write_cache(path, key, features):
    """Write under a temporary name, then move into place; the temporary file never stays behind."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump({"key": key, "features": features}, file, separators=(",", ":"))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=None)
def warn_once(message):
    """A cache warning on stderr, once per process (every split of a run meets the same cache folder)."""
    print(f"warning: {message}", file=sys.stderr)


class Collator:
    """Pads a list of items into a batch of tensors: to the longest item, rounded up to a multiple
    of `pad_to_multiple_of` (fewer distinct shapes for torch.compile), or to `pad_to`."""

    def __init__(self, pad_token_id, pad_to=None, pad_to_multiple_of=None):
        self.pad_token_id = pad_token_id
        self.pad_to = pad_to
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items):
        longest = max(len(item["input_ids"]) for item in items)
        multiple = self.pad_to_multiple_of or 1
        length = self.pad_to or -(-longest // multiple) * multiple
        if longest > length:
            raise UserError(f"an item of {longest} tokens does not fit pad_to={self.pad_to}")
        batch = {"input_ids": _pad(items, "input_ids", length, self.pad_token_id),
                 "attention_mask": _pad(items, "attention_mask", length, 0)}
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = _pad(items, "token_type_ids", length, 0)
        if "mask_pos" in items[0]:
            batch["mask_pos"] = torch.tensor([item["mask_pos"] for item in items], dtype=torch.long)
        labels = [item["labels"] for item in items]
        dtype = torch.float if any(isinstance(label, float) for label in labels) else torch.long
        batch["labels"] = torch.tensor(labels, dtype=dtype)
        return batch


def _pad(items, name, length, value):
    return torch.tensor([item[name] + [value] * (length - len(item[name])) for item in items],
                        dtype=torch.long)
