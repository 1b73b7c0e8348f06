"""One run: its checks, data and model, training in stages, final scores, log record and saved delta.

run.py turns a command line into runs and runs them, one after another or packed (src/packed.py).
"""
import dataclasses
import datetime
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import AutoConfig, AutoTokenizer, set_seed

from src.arguments import (check_consistency, check_files, check_model_config, check_template_room, given_arguments,
                           parse_args, task_of)
from src.dataset import Collator, FewShotDataset, input_length, uses_template, warn_once
from src.delta import METHODS, NEW_HEAD_PREFIX, count_parameters, methods_for_template
from src.delta.checkpoint import load_delta, save_delta
from src.errors import UserError
from src.identity import canonical_arguments, is_logged, same_run_as
from src.results import append_result, check_writable, metric_key, read_results, run_facts
from src.templates import label_word_ids, parse_mapping

# src.models and src.trainer are imported where a run builds or trains its model: transformers' model classes,
# the adapters library and the Trainer add seconds to `run.py --help` and to every bad-input error.


class Experiment:
    """One run: data and model set up, optional training (in stages), final evaluation, log record."""

    def __init__(self, model_args, data_args, training_args):
        self.model_args, self.data_args, self.args = model_args, data_args, training_args
        self.task = task_of(data_args)
        data_args.task_name = self.task.key
        self.trains = training_args.do_train and not training_args.notrain
        self.stages, self.attached, self.template_parts = check_consistency(model_args, data_args, training_args,
                                                                            self.task)
        self.delta = None  # the --delta_path delta (src/delta/checkpoint.py: SavedDelta), read by `checked`

    @classmethod
    def checked(cls, argv):
        """The run of one argument list, every check done that needs no weights and no features (UserError).
        A --delta_path delta is read once, and its methods' options are the run's (SavedDelta.take_options)."""
        experiment = cls(*parse_args(argv))
        experiment.delta = check_files(experiment.model_args, experiment.data_args, experiment.task)
        if experiment.delta:
            experiment.delta.check_run(experiment.args.seed, experiment.template_parts)
            experiment.delta.take_options(experiment.model_args, given_arguments(argv))
        experiment.check_model()
        check_writable(experiment.args.log_file, experiment.args.output_dir if experiment.trains else None)
        return experiment

    def already_logged(self):
        if not Path(self.args.log_file).exists():
            return False
        return is_logged(read_results(self.args.log_file), self.arguments_record())

    def check_model(self):
        """Checks against the model's config and tokenizer, read (once) before anything heavy loads."""
        from src.models import load_pretrained
        self.config = load_pretrained(AutoConfig, self.model_args.model_name_or_path, "model config")
        check_model_config(self.config, self.model_args, self.data_args, self.modules())
        self.tokenizer = load_pretrained(AutoTokenizer, self.model_args.model_name_or_path, "tokenizer")
        if len(self.tokenizer) > self.config.vocab_size:
            raise UserError(f"--model_name_or_path: its tokenizer has {len(self.tokenizer)} tokens, more than the "
                            f"model's {self.config.vocab_size} embeddings")
        mapping, labels = self.data_args.mapping, self.task.labels
        self.label_words = None
        if uses_template(self.model_args.few_shot_type):
            try:
                self.label_words = label_word_ids(self.tokenizer, parse_mapping(mapping, labels), labels)
            except UserError as error:
                if self.task.source is None or mapping != self.task.mapping:
                    raise
                raise UserError(f"{self.task.source}: mapping: {error} for the tokenizer of "
                                f"{self.model_args.model_name_or_path}") from None
            check_template_room(self.tokenizer, self.model_args, self.data_args, self.task)

    def modules(self):
        """The delta methods whose modules the model gets, in registry order: those any stage trains, those
        --attach names, those the template needs (*prompt*) and those of the --delta_path delta."""
        wanted = {*self.stages.methods, *self.attached, *methods_for_template(self.template_parts),
                  *(self.delta.modules if self.delta else ())}
        return [name for name in METHODS if name in wanted]

    def arguments_record(self):
        """The run's arguments as its record holds them: every value in its one spelling (canonical_arguments);
        a task file as its content, part of the run's identity (two files of one task name are two settings)."""
        record = {**self.args.to_dict(), **dataclasses.asdict(self.model_args), **dataclasses.asdict(self.data_args)}
        record["do_train"] = self.trains
        if self.data_args.task_file is not None:
            record["task_file"] = self.task.definition()
        return canonical_arguments(record)

    def run(self):
        started = time.time()
        self.prepare()
        stage_results, trainer = self.train()
        return self.finish(trainer, stage_results, started)

    def prepare(self):
        """Features, model (seeded as the run's --seed, with the modules of its methods) and collator."""
        from src.models import build_model

        data_args, model_args, args = self.data_args, self.model_args, self.args
        self.datasets = self.load_datasets(FewShotDataset, self.tokenizer)

        if not torch.cuda.is_available():
            args.dataloader_pin_memory = False
        set_seed(args.seed)
        self.model = build_model(model_args, self.task, self.label_words, self.modules(), self.template_parts,
                                 config=self.config)
        new = [name for name in self.model.initialised if not name.startswith(NEW_HEAD_PREFIX)]
        if new:
            fate = ("loaded from --delta_path" if model_args.delta_path else
                    "drawn from --seed and saved with the delta" if self.trains else "drawn from --seed")
            warn_once(f"--model_name_or_path {model_args.model_name_or_path} lacks {len(new)} of the model's "
                      f"tensors (e.g. {new[0]}): they are {fate}")
        if self.delta:
            load_delta(self.model, self.delta)
        pad_to = None
        if model_args.reference_mode:  # the reference pads every batch to the maximum length
            pad_to = input_length(data_args.max_seq_length, model_args.few_shot_type, data_args.double_demo)
        self.collator = Collator(self.tokenizer.pad_token_id, pad_to=pad_to,
                                 pad_to_multiple_of=data_args.pad_to_multiple_of)

    def make_trainer(self, model, trainer_class=None, stage=None):
        """A Trainer of this run (`trainer_class`, default DeltaTrainer) over `model` (in a multi-stage run, for
        its `stage`)."""
        from src.trainer import DeltaTrainer
        return (trainer_class or DeltaTrainer)(model=model, args=self.args, train_dataset=self.datasets["train"],
                                               eval_dataset=self.datasets["dev"], data_collator=self.collator,
                                               task=self.task, stage=stage,
                                               write_delta=lambda folder: self.write_delta(model, folder)())

    def write_delta(self, model, folder):
        """Write the run's delta (`model`'s) in `folder`; returns the commit (src/delta/checkpoint.py: save_delta)."""
        return save_delta(model, self.stages.methods, self.modules(), folder, self.arguments_record())

    def eval_sets(self):
        """The splits each stage's best state is scored on."""
        return {"dev": self.datasets["dev"], "test": self.datasets["test"]}

    def final_splits(self):
        """The splits the final record scores (the last stage's best state)."""
        return [split for split in self.datasets if not (split == "train" and self.data_args.skip_train_eval)]

    def train(self, train_stage=None):
        """(stage results, the last trainer); no training: ([], a trainer for the evaluation).
        `train_stage`: how a stage is trained (`train_in_stages`); a pack's trains its runs together."""
        from src.trainer import train_alone, train_in_stages
        if not self.trains:
            return [], self.make_trainer(self.model)
        return train_in_stages(self.model, self.stages, self.make_trainer, self.eval_sets(),
                               self.model_args.stage_init, train_stage or train_alone)

    def finish(self, trainer, stage_results, started):
        """Final scores (reusing the last stage's), the log record, the saved delta."""
        from src.trainer import score_splits

        args, datasets, model = self.args, self.datasets, self.model
        # The model is still in the state its last stage was scored in: reuse those scores.
        stage_scores = {split: stage_results[-1][split] for split in self.eval_sets()} if stage_results else {}
        final_splits = self.final_splits()
        scores = {**stage_scores, **score_splits(trainer, {split: datasets[split] for split in final_splits
                                                           if split not in stage_scores})}
        metrics = {}
        for split in final_splits:
            other = self.task.other_tests.get(split)  # MNLI's test-mm: task mnli-mm's test set
            task_key, name = (other.lower(), "test") if other else (self.task.key, split)
            metrics.update({metric_key(task_key, name, metric): value for metric, value in scores[split].items()})
        trainable, total = count_parameters(model, self.stages.methods)
        trainable = trainable if self.trains else 0
        arguments = self.arguments_record()
        record = {**arguments, **run_facts(arguments), **metrics,
                  "trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / total,
                  "stages": stage_results, "wall_time": round(time.time() - started, 2),
                  "time": datetime.datetime.now().isoformat(timespec="seconds"),
                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
        print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        print(self.summary(record, datasets["test"]))
        if args.process_index == 0:  # one writer under torchrun
            self.save(record, lambda: self.write_delta(model, args.output_dir))
        return record

    def save(self, record, write_delta):
        """Write the delta under temporary names, append the record, then move the delta into place.

        With --skip_done, the log is checked again under its lock: of two identical runs finishing
        together, only the first is logged. An I/O error is one line; the metrics are printed already.
        """
        commit = None
        try:
            commit = write_delta() if self.trains else None
            skip = same_run_as(self.arguments_record()) if self.args.skip_done else None
            logged = append_result(self.args.log_file, record, skip_if=skip)
            if not logged:
                print(f"skip: {self.args.log_file} already holds this run (logged while it ran)", file=sys.stderr)
            if commit:
                commit(keep=logged)
        except OSError as error:
            kept = f"; the trained delta is left in {self.args.output_dir} under a .tmp name" if commit else ""
            raise UserError(f"cannot save the results of this run (printed above): {error}{kept}") from error

    def summary(self, record, test_set):
        """One line: the main metric on dev and test beside the majority class's share of test."""
        task, metric = self.task, self.task.main_metric
        line = (f"result: {task.name} {' -> '.join(self.stages.specs) if self.trains else 'zero-shot'}"
                f" dev {metric} {record[metric_key(task.key, 'dev', metric)]:.4f}"
                f" test {metric} {record[metric_key(task.key, 'test', metric)]:.4f}")
        if not task.regression:
            majority = max(Counter(test_set.labels.tolist()).values()) / len(test_set.labels)
            line += f" (majority class {majority:.4f})"
        return line + f", {record['trainable_params']} trained parameters, {record['wall_time']:.0f} s"

    def load_datasets(self, dataset_class, tokenizer):
        """train, dev, test (+ the task's other test splits: MNLI's test-mm) features; with --dev_as_test, test
        is dev."""
        data_args = self.data_args
        feature_args = SimpleNamespace(**dataclasses.asdict(data_args), few_shot_type=self.model_args.few_shot_type,
                                       prompt_num=self.model_args.prompt_num, seed=self.args.seed, task=self.task)
        splits = ["train", "dev"]
        if not data_args.dev_as_test:
            splits += ["test", *self.task.other_tests]
        datasets = {split: dataset_class(feature_args, tokenizer, split, cache_dir=data_args.feature_cache_dir)
                    for split in splits}
        datasets.setdefault("test", datasets["dev"])
        return datasets

