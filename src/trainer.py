"""Training: a Trainer that keeps the best dev state of the delta only, and the stage loop (SPEC §2, §6)."""
import contextlib
import functools
import os
import sys
from typing import Callable

import numpy as np
import torch
from torch.utils.data import SequentialSampler, Subset
from transformers import Trainer
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from src.delta import Stages, set_trainable
from src.errors import UserError
from src.fold import FlatStacks, aliases
from src.models import regression_prediction
from src.tasks import compute_metrics


def predictions_from_logits(task, logits, num_sample=1):
    """Average the logits over demonstration samples, then turn them into labels or scores."""
    logits = np.asarray(logits, dtype=np.float64)
    logits = logits.reshape(-1, num_sample, logits.shape[-1]).mean(axis=1)
    if task.regression:
        return regression_prediction(torch.from_numpy(logits), task.label_range).numpy()
    return logits.argmax(axis=-1)


def longest_first(dataset):
    """Evaluation order: by length, longest first, so batches hold similar lengths (1.26x faster)."""
    lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


class TrainingBar(ProgressCallback):
    """One progress bar for training, with the latest dev score and loss on it; no bar per evaluation."""

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass

    def on_log(self, args, state, control, logs=None, **kwargs):
        shown = {k.replace("eval_", "dev_"): round(v, 4) for k, v in logs.items()
                 if k.startswith("eval_") or k == "loss"}
        if self.training_bar is not None and shown:
            self.training_bar.set_postfix(shown)


# Optimizers whose update of a tensor depends on its own elements only: one over the trained tensors laid
# end to end in one buffer updates each of them exactly as one over the tensors themselves.
ELEMENTWISE_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")


class DeltaTrainer(Trainer):
    """Evaluates on dev every `eval_steps` and snapshots the trainable tensors at the best score.

    Snapshots hold only the delta (no multi-GB checkpoint per evaluation); `restore` puts one back.
    """

    flattens_trained = True  # the lean step's optimizer may lay the trained tensors in one buffer

    def __init__(self, *args, task, write_delta=None, stage=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.write_delta = write_delta  # folder -> the run's delta written there (src/delta/checkpoint.py)
        self.stage = stage  # a multi-stage run's stage number
        if not self.args.disable_tqdm:
            self.remove_callback(ProgressCallback)
            self.add_callback(TrainingBar)
        self.task = task
        self.best_value = self.best_step = self.best_state = None
        self.eval_history = []
        self._tracking = False
        self._all_finite = None  # device flag: every training loss so far finite
        self._trained = self._zeroed = self._flat = None

    def train(self, *args, **kwargs):
        try:
            with self.tracking():
                output = super().train(*args, **kwargs)
        finally:
            if self._zeroed is not None:  # the model's own zero_grad again
                del self._zeroed.zero_grad
                self._zeroed = None
        self.check_finite_loss()
        return output

    @contextlib.contextmanager
    def tracking(self):
        """While inside, evaluations count for the best dev state (training, packed or not)."""
        self._tracking = True
        try:
            yield
        finally:
            self._tracking = False

    def _save(self, output_dir=None, state_dict=None):
        """A Trainer checkpoint (--save_strategy) holds the run's delta at that step (SPEC §6: not the frozen
        model), as run.py saves it at the end (`write_delta`: --delta_path loads it), and the training
        arguments, beside the Trainer's own files (optimizer, schedule, state)."""
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        self.write_delta(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _get_output_dir(self, trial):
        """Where checkpoints go: a multi-stage run's in OUTPUT_DIR/stageN, since each stage counts its steps from
        0 (its checkpoint-STEP folders would replace the earlier stage's)."""
        folder = super()._get_output_dir(trial)
        return os.path.join(folder, f"stage{self.stage}") if self.stage else folder

    def _get_train_sampler(self, train_dataset=None):
        """The Trainer's sampler; --group_by_length's draws from a generator of the run's own (--data_seed, else
        --seed), not from torch's global one, which a pack's runs share (a run's order would depend on its pack)."""
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            sampler.generator = torch.Generator().manual_seed(seed)
        return sampler

    def _get_eval_sampler(self, eval_dataset):
        """The examples in the order given, --group_by_length or not: `score` orders them itself (longest first)
        and maps the predictions back by that order (across processes, accelerate shards them in order)."""
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def create_accelerator_and_postprocess(self):
        """The lean step (`lean_step`) wherever nothing of the Trainer's own step applies, compiled with
        --torch_compile; elsewhere the Trainer's own step (with --torch_compile: its model's forward compiled)."""
        super().create_accelerator_and_postprocess()
        reason = why_not_lean(self.args)
        if reason and self.args.torch_compile:
            print(f"note: --torch_compile compiles the model's forward only ({reason})", file=sys.stderr)
        self.lean = reason is None
        if self.lean:  # the Trainer clips `model.parameters()`: a walk over every module, each step
            self.accelerator.clip_grad_norm_ = self.clip_trained

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The Trainer's step (the lean one where it applies: `lean_step`); a NaN or infinite loss is
        remembered on the device (no host sync per step) and stops the run at the next evaluation or at
        the end of training."""
        if self.lean:
            loss = self.lean_step(model, inputs)
        else:
            loss = super().training_step(model, inputs, num_items_in_batch)
        self.note_loss(loss)
        return loss

    def lean_step(self, model, inputs):
        """The Trainer's training step where nothing of its own applies (`why_not_lean`), through the model (with
        --torch_compile the one the Trainer compiled: forward and backward compiled), without the walks over the
        model's ~1,400 modules that cost a fifth to a quarter of an eager step (more than the compiled forward and
        backward): `model.train()` only after an evaluation; the Trainer's `model.zero_grad()` after the optimizer
        step sets the trained tensors' gradients to None only (`zero_trained`), and its clipping takes only those
        (`clip_trained`). The optimizer is the Trainer's (fused AdamW by default), over one buffer per parameter
        group holding the trained tensors (`create_optimizer`)."""
        if not self.model.training:
            model.train()
        self.take_over_zero_grad(model)
        with self.compute_loss_context_manager(), compiled_random_numbers(self.args):
            loss = self.compute_loss(model, self._prepare_inputs(inputs))
            loss.backward()
        return loss.detach()

    def create_optimizer(self):
        """In the lean step with an elementwise optimizer (the default fused AdamW): the trained tensors
        of each parameter group (weight decay or not) laid end to end in one buffer, their gradients too
        (`FlatStacks` of one run), and the Trainer's optimizer over the buffers: one update, one clipping
        norm and one zeroing per step instead of one per trained tensor (~400; 4 ms of a 35 ms CPU step)."""
        if (self.optimizer is not None or not self.lean or not self.flattens_trained
                or self.args.optim.value not in ELEMENTWISE_OPTIMIZERS):
            return super().create_optimizer()
        decays = set(self.get_decay_parameter_names(self.model))
        trained = [name for name, p in self.model.named_parameters() if p.requires_grad]
        groups = [([name for name in trained if name in decays], self.args.weight_decay),
                  ([name for name in trained if name not in decays], 0.0)]
        groups = [(names, decay) for names, decay in groups if names]
        self._flat = [FlatStacks([self.model], names, aliases(self.model, names), row_grads=True)
                      for names, _ in groups]
        for flat in self._flat:
            flat.data.grad = flat.grad
        optimizer_class, options = self.get_optimizer_cls_and_kwargs(self.args, self.model)
        self.optimizer = optimizer_class([{"params": [flat.data], "weight_decay": decay}
                                          for flat, (_, decay) in zip(self._flat, groups)], **options)
        return self.optimizer

    def take_over_zero_grad(self, model):
        """Until the end of train(), the Trainer's `model.zero_grad()` after each optimizer step is
        `zero_trained`: the trained tensors only, and in place where they lie in buffers (`create_optimizer`,
        a folded pack's stacks), whose gradient views the Trainer's first zero_grad set to None (linked again)."""
        if "zero_grad" in vars(model):
            return
        model.zero_grad = self.zero_trained
        self._zeroed = model
        for flat in self._flat or ():
            flat.link_grads()

    def trained_tensors(self):
        """The tensors this Trainer trains, in the model's order (the order the Trainer clips them in), or
        the buffers holding them end to end (`create_optimizer`)."""
        if self._flat is not None:
            return [flat.data for flat in self._flat]
        if self._trained is None:
            self._trained = [p for p in self.model.parameters() if p.requires_grad]
        return self._trained

    def zero_trained(self, set_to_none=True):
        if self._flat is not None:  # in place: the trained tensors' gradients stay views of the buffers
            for flat in self._flat:
                flat.zero_grad()
            return
        for p in self.trained_tensors():
            p.grad = None

    def clip_trained(self, parameters, max_norm, norm_type=2):
        """The Trainer's gradient clipping (torch's clip_grad_norm_) over the trained tensors only, by
        foreach kernels; returns the total norm, which the Trainer logs as grad_norm."""
        grads = [p.grad for p in self.trained_tensors() if p.grad is not None]
        if not grads:
            return torch.tensor(0.0)
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, norm_type)), norm_type)
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return total

    def note_loss(self, loss):
        """Remember on the device whether every training loss so far was finite (packed runs too)."""
        finite = torch.isfinite(loss.detach()).all()
        self._all_finite = finite if self._all_finite is None else self._all_finite & finite

    def check_finite_loss(self):
        """UserError when a training loss so far was NaN or infinite (nothing is logged or saved)."""
        if self._all_finite is not None and not bool(self._all_finite):
            raise UserError(f"the training loss became NaN or infinite before step {self.state.global_step + 1}; "
                            "lower --learning_rate (nothing was logged or saved)")

    def score(self, dataset):
        """Task metrics of the current parameters on `dataset` (bare names: acc, f1, ...); the
        Trainer predicts the examples in the order given, longest first."""
        order = longest_first(dataset)
        sorted_logits = self.predict(Subset(dataset, order)).predictions
        logits = np.empty_like(sorted_logits)
        logits[order] = sorted_logits  # back to dataset order (demo samples rely on it)
        predictions = predictions_from_logits(self.task, logits, getattr(dataset, "num_sample", 1))
        return compute_metrics(self.task, predictions, dataset.labels)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        self.check_finite_loss()
        metrics = self.score(eval_dataset if eval_dataset is not None else self.eval_dataset)
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in metrics.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        if self._tracking:
            value = metrics[f"{metric_key_prefix}_{self.task.main_metric}"]
            self.eval_history.append([self.state.global_step, value])
            if self.best_value is None or value > self.best_value:
                self.best_value, self.best_step = value, self.state.global_step
                self.best_state = delta_state(self.model)
        return metrics


def compiled_random_numbers(args):
    """Where the compiled step's graphs (compiled at their first call, inside) draw dropout's random numbers:
    on CPU from aten's generator, as eager code does; inductor's own CPU code builds a Philox generator for
    each number it draws (measured: 32.9 -> 29.1 ms a compiled step, docs/PERFORMANCE.md)."""
    if not args.torch_compile or args.device.type != "cpu":
        return contextlib.nullcontext()
    import torch._inductor.config  # noqa: F401 (loaded by torch.compile's first call; here it is patched before)
    return torch._inductor.config.patch(fallback_random=True)


def why_not_lean(args):
    """Why the Trainer's own training step must run (something of it applies), or None."""
    if args.gradient_accumulation_steps != 1:
        return "gradient accumulation"
    if args.fp16:
        return "fp16 loss scaling"
    if args.world_size > 1 or args.deepspeed or args.fsdp:
        return "several processes"
    if args.n_gpu > 1:
        return "several GPUs in one process (the Trainer averages their losses)"
    optim = args.optim.value
    if optim in ("lomo", "adalomo") or optim.startswith("schedule_free"):
        return f"--optim {optim} works inside the Trainer's training step"
    if args.torch_empty_cache_steps:
        return "--torch_empty_cache_steps works inside the Trainer's training step"
    return None


def delta_state(model):
    """CPU copies of the currently trainable tensors."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def restore(model, state):
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            parameters[name].copy_(tensor)


def score_splits(trainer, datasets):
    """{split: metrics}; a dataset serving as two splits (dev as test) is scored once."""
    scores = {}
    for dataset in datasets.values():
        if id(dataset) not in scores:
            scores[id(dataset)] = trainer.score(dataset)
    return {split: scores[id(dataset)] for split, dataset in datasets.items()}


def train_alone(make_trainer: Callable[[torch.nn.Module], Trainer], model: torch.nn.Module) -> Trainer:
    """A stage of one run: a fresh Trainer of `model`, trained; returns the Trainer."""
    trainer = make_trainer(model)
    trainer.train()
    return trainer


def train_in_stages(model, stages: Stages, make_trainer, eval_sets, stage_init="last", train_stage=train_alone):
    """Train each stage with a fresh Trainer (fresh optimizer and schedule) on its own groups.

    Stage N+1 starts from the end of stage N (reference) or, with stage_init='best', from stage N's
    best dev state. The model ends in the best dev state of the last stage. Returns one result per
    stage (best step, dev history, metrics of its best state on every set of `eval_sets`).
    `train_stage(make_trainer, model)` trains a stage and returns its Trainer: `train_alone`, or a
    pack's (src/packed.py), which trains the stage of its runs together. With several stages, `make_trainer`
    gets each one's number (`stage`: its checkpoints' folder).
    """
    results, trainer = [], None
    for index, (methods, spec) in enumerate(zip(stages, stages.specs)):
        set_trainable(model, methods)
        trainer = train_stage(functools.partial(make_trainer, stage=index + 1) if len(stages) > 1 else make_trainer,
                              model)
        results.append(end_stage(model, trainer, spec, eval_sets,
                                 restart_from_last=stage_init == "last" and index < len(stages) - 1))
    return results, trainer


def end_stage(model, trainer, spec, eval_sets, restart_from_last):
    """After a stage's training: score its best dev state on `eval_sets`, then leave the model in
    that state, or (restart_from_last) in the state the training ended in. Returns the stage result
    (`spec`: the stage's methods, as `Stages` spells them)."""
    with best_state(model, trainer, restart_from_last):
        return stage_result(trainer, spec, score_splits(trainer, eval_sets))


@contextlib.contextmanager
def best_state(model, trainer, restart_from_last):
    """Inside: the model in its stage's best dev state; after: left there, or (restart_from_last) back
    in the state its training ended in."""
    last = delta_state(model)
    restore(model, trainer.best_state or last)
    yield
    if restart_from_last:
        restore(model, last)


def stage_result(trainer, spec, scores):
    return {"training_params": spec, "best_step": trainer.best_step, "eval_history": trainer.eval_history, **scores}
