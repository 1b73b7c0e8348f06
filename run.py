"""Prompt-based delta tuning of a masked LM (LM-BFF / FS-PBA command line).

    python run.py --task_name SST-2 --data_dir data/k-shot/SST-2/16-42 --model_name_or_path roberta-large \
        --template "*cls*prompt*sent_0*_It_was*mask*.*sep+*" --mapping "{'0':'terrible','1':'great'}" \
        --training_params prompt --do_train --do_eval --do_predict --max_steps 1000 --eval_steps 100 ...

Bad input (unknown task, bad template or mapping, missing data) is one line on stderr and exit 2,
before anything is trained or appended to the results log.
"""
import dataclasses
import datetime
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from src.errors import UserError, cli  # noqa: E402

IDENTITY_KEYS = ("task_name", "tag", "seed", "learning_rate", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "max_steps", "eval_steps", "template", "mapping", "few_shot_type",
                 "training_params", "do_train", "model_name_or_path", "prompt_num", "use_adapter", "stage_init",
                 "data_dir", "max_seq_length", "num_sample", "num_k")


@cli
def main(argv=None):
    from src.arguments import parse_args
    from src.multirun import expand_argv
    experiments = []
    for run_argv in expand_argv(sys.argv[1:] if argv is None else argv):
        experiment = Experiment(*parse_args(run_argv))
        if experiment.args.skip_done and experiment.already_logged():
            print(f"skip: {experiment.args.log_file} already holds this run", file=sys.stderr)
        else:
            experiments.append(experiment)
    if len(experiments) > 1:
        from src.packed import run_packed
        return run_packed(experiments)
    for experiment in experiments:
        experiment.run()
    return 0


class Experiment:
    """One run: data and model set up, optional training (in stages), final evaluation, log record."""

    def __init__(self, model_args, data_args, training_args):
        from src.tasks import get_task
        self.model_args, self.data_args, self.args = model_args, data_args, training_args
        self.task = get_task(data_args.task_name)
        data_args.task_name = self.task.key
        self.trains = training_args.do_train and not training_args.notrain
        if model_args.stage_init not in ("last", "best"):
            raise UserError(f"--stage_init must be 'last' or 'best', got {model_args.stage_init!r}")
        if model_args.few_shot_type not in ("prompt", "finetune", "prompt-demo"):
            raise UserError(f"unknown --few_shot_type {model_args.few_shot_type!r} (prompt, finetune, prompt-demo)")

    def record_identity(self):
        record = self.arguments_record()
        return {key: record.get(key) for key in IDENTITY_KEYS}

    def already_logged(self):
        from src.results import matches, read_results
        if not Path(self.args.log_file).exists():
            return False
        identity = self.record_identity()
        return any(matches(record, identity) for record in read_results(self.args.log_file))

    def arguments_record(self):
        record = {**self.args.to_dict(), **dataclasses.asdict(self.model_args), **dataclasses.asdict(self.data_args)}
        record["training_params"] = " ".join(self.model_args.training_params)
        record["do_train"] = self.trains
        return record

    def run(self):
        started = time.time()
        self.prepare()
        stage_results, trainer = self.train()
        return self.finish(trainer, stage_results, started)

    def prepare(self):
        """Tokenizer, features, model (seeded as the run's --seed), collator and stages."""
        import torch
        from transformers import AutoTokenizer, set_seed

        from src.dataset import Collator, FewShotDataset
        from src.delta import METHODS, parse_stages
        from src.delta.checkpoint import load_delta
        from src.models import build_model
        from src.templates import label_word_ids, parse_mapping, parse_template

        data_args, model_args, args = self.data_args, self.model_args, self.args
        prompt_mode = model_args.few_shot_type != "finetune"
        if prompt_mode and not (data_args.template and data_args.mapping):
            raise UserError("--template and --mapping are required unless --few_shot_type finetune")
        has_prompt = prompt_mode and any(part.kind == "prompt" for part in parse_template(data_args.template).parts)
        self.stages = parse_stages(model_args.training_params, use_adapter=model_args.use_adapter,
                                   has_prompt=has_prompt)
        self.all_methods = sorted({m for stage in self.stages for m in stage}, key=list(METHODS).index)
        tokenizer = self.load_tokenizer(AutoTokenizer)
        words = (label_word_ids(tokenizer, parse_mapping(data_args.mapping, self.task.labels), self.task.labels)
                 if prompt_mode else None)

        self.datasets = self.load_datasets(FewShotDataset, tokenizer)

        if not torch.cuda.is_available():
            args.dataloader_pin_memory = False
        set_seed(args.seed)
        self.model = build_model(model_args, self.task, words, has_prompt)
        if model_args.delta_path:
            load_delta(self.model, model_args.delta_path)
        pad_to = None
        if model_args.reference_mode:  # the reference pads every batch to the maximum length
            doubled = data_args.double_demo and model_args.few_shot_type == "prompt-demo"
            pad_to = data_args.max_seq_length * (2 if doubled else 1)
        self.collator = Collator(tokenizer.pad_token_id, pad_to=pad_to, pad_to_multiple_of=data_args.pad_to_multiple_of)

    def make_trainer(self, model):
        from src.trainer import DeltaTrainer
        return DeltaTrainer(model=model, args=self.args, train_dataset=self.datasets["train"],
                            eval_dataset=self.datasets["dev"], data_collator=self.collator, task=self.task)

    def eval_sets(self):
        """The splits each stage's best state is scored on."""
        return {"dev": self.datasets["dev"], "test": self.datasets["test"]}

    def train(self):
        """(stage results, the last trainer); no training: ([], a trainer for the evaluation)."""
        from src.trainer import train_in_stages
        if not self.trains:
            return [], self.make_trainer(self.model)
        return train_in_stages(self.model, self.stages, self.make_trainer, self.eval_sets(),
                               self.model_args.stage_init)

    def finish(self, trainer, stage_results, started):
        """Final scores (reusing the last stage's), the log record, the saved delta."""
        import torch

        from src.delta import count_parameters
        from src.delta.checkpoint import save_delta
        from src.trainer import score_splits

        data_args, args, datasets, model = self.data_args, self.args, self.datasets, self.model
        # The model is still in the state its last stage was scored in: reuse those scores.
        stage_scores = {split: stage_results[-1][split] for split in self.eval_sets()} if stage_results else {}
        final_splits = [split for split in datasets if not (split == "train" and data_args.skip_train_eval)]
        scores = {**stage_scores, **score_splits(trainer, {split: datasets[split] for split in final_splits
                                                           if split not in stage_scores})}
        metrics = {}
        for split in final_splits:
            prefix = "mnli-mm_test" if split == "test-mm" else f"{self.task.key}_{split}"
            metrics.update({f"{prefix}_eval_{name}": value for name, value in scores[split].items()})
        trainable, total = count_parameters(model, self.all_methods)
        trainable = trainable if self.trains else 0
        record = {**self.arguments_record(), **metrics, "trainable_params": trainable, "total_params": total,
                  "trainable_percent": 100.0 * trainable / total, "stages": stage_results,
                  "wall_time": round(time.time() - started, 2),
                  "time": datetime.datetime.now().isoformat(timespec="seconds"),
                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
        if args.process_index == 0:  # one writer under torchrun
            from src.results import append_result
            if self.trains:
                save_delta(model, self.all_methods, args.output_dir, self.arguments_record())
            append_result(args.log_file, record)
        print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return record

    def load_datasets(self, dataset_class, tokenizer):
        """train, dev, test (+ test-mm for MNLI) features; with --dev_as_test, test is dev."""
        data_args = self.data_args
        feature_args = SimpleNamespace(**dataclasses.asdict(data_args), few_shot_type=self.model_args.few_shot_type,
                                       prompt_num=self.model_args.prompt_num, seed=self.args.seed)
        splits = ["train", "dev"]
        if not data_args.dev_as_test:
            splits += ["test"] + (["test-mm"] if "test-mm" in self.task.splits else [])
        datasets = {split: dataset_class(feature_args, tokenizer, split, cache_dir=data_args.feature_cache_dir)
                    for split in splits}
        datasets.setdefault("test", datasets["dev"])
        return datasets

    def load_tokenizer(self, auto_tokenizer):
        try:
            return auto_tokenizer.from_pretrained(self.model_args.model_name_or_path)
        except (OSError, ValueError) as error:  # ValueError: not a local folder nor a valid hub name
            raise UserError(f"cannot load tokenizer {self.model_args.model_name_or_path!r}: "
                            f"{str(error).splitlines()[0]}") from error


if __name__ == "__main__":
    sys.exit(main())
