"""Packed runs: runs of one setting trained together over one copy of the frozen base model.

    python run.py ... --learning_rate 1e-3 3e-4 --seed 13 21 42 --data_dir 'data/k-shot/SST-2/16-{seed}'

The command line becomes one run per (learning rate, seed) (`src/multirun.py`). Each run is
parsed, built, trained, scored, saved and logged exactly as the single run with its values would be.

How: every run builds its model as a single run does (seeded with its --seed, so the same prompt
table and adapters); the tensors that are equal in all runs (the frozen base) are then shared, one
copy in memory, and the rest (its delta) are stored stacked along a leading run dimension, each
run's model holding its row as its own parameter (`RunStacks`). A training step calls one model
through `torch.func.functional_call` under `torch.func.vmap` (base unbatched, stacks and batch
batched): each frozen matrix product is one call for all runs' batches, and the framework's cost per
op is paid once for all runs. One backward of the summed losses gives each run its own gradients
(rows of the stacks' gradients); each run's own Trainer-built AdamW, schedule and gradient clipping
(its own global norm) then step its tensors; its own Trainer evaluates, keeps its best state and scores.
Data order: each run's training data loader is the one its Trainer builds, created right after the
Trainer (which seeds with the run's --seed), epoch after epoch as in `Trainer.train`. The loop is
ours, not `Trainer.train`: Trainer callbacks other than its step/evaluation flow do not run. With
`--torch_compile` the vmapped forward (and so its backward) is compiled with the run's
`--torch_compile_backend`/`--torch_compile_mode`, and each run's evaluation as in a single run.

A run whose data is missing or whose loss turns non-finite fails with its own `error:` line; the
others go on (exit status 1). Setups that cannot share the base or that the Trainer changes outside
the model (`all`, finetune, zero-shot, label smoothing, NEFTune, gradient accumulation, fp16 loss
scaling, several processes) run one after another instead.
With dropout > 0 every run draws its own masks (vmap randomness="different"), from another random
stream than a single run: equal in distribution, not bit for bit; with dropout 0 the results equal
the single runs' within float noise (tests/test_packed.py).
"""
import contextlib
import itertools
import math
import sys
import time

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.trainer_callback import DefaultFlowCallback, TrainerState

from src.delta import METHODS, rules_for, set_trainable
from src.errors import UserError
from src.multirun import run_label
from src.trainer import end_stage


def describe(experiment):
    return run_label(experiment.args.seed, experiment.args.learning_rate)


def fail(experiment, error):
    print(f"error: run {describe(experiment)}: {error}", file=sys.stderr)


def why_not_packed(experiment):
    """Why this run's setup cannot share the frozen base with others, or None."""
    args, model_args = experiment.args, experiment.model_args
    if not experiment.trains:
        return "nothing is trained"
    if model_args.few_shot_type == "finetune":
        return "finetune mode trains a new head per run"
    trains_base = [name for stage in experiment.stages for name in stage if METHODS[name].trains_base]
    if trains_base:
        return f"{trains_base[0]!r} trains the base model itself"
    if args.label_smoothing_factor > 0:
        return "the Trainer's label smoothing replaces the model's loss"
    if args.neftune_noise_alpha:
        return "the Trainer's NEFTune noise on the embeddings"
    if args.gradient_accumulation_steps != 1:
        return "gradient accumulation"
    if args.fp16:
        return "fp16 loss scaling"
    if args.world_size > 1:
        return "several processes"
    return None


def run_packed(experiments):
    """Run several experiments of one setting together; returns the exit status (1: a run failed)."""
    started = time.time()
    reason = why_not_packed(experiments[0])
    failed = False
    if reason:
        print(f"note: {len(experiments)} runs one after another ({reason}: no shared base)", file=sys.stderr)
        for experiment in experiments:
            try:
                experiment.run()
            except UserError as error:
                fail(experiment, error)
                failed = True
        return int(failed)
    live = []
    for experiment in experiments:
        try:
            experiment.prepare()
            live.append(experiment)
        except UserError as error:
            fail(experiment, error)
            failed = True
    if not live:
        return 1
    per_run = share_frozen([experiment.model for experiment in live], rules_for(live[0].all_methods))
    stages = live[0].stages
    results = {id(experiment): [] for experiment in live}
    trainers = {}
    for index, groups in enumerate(stages):
        for experiment in live:
            set_trainable(experiment.model, groups)
        stacks = RunStacks([experiment.model for experiment in live], per_run)
        runs = []
        for experiment in live:
            trainers[id(experiment)] = experiment.make_trainer(experiment.model)
            runs.append(PackedRun(trainers[id(experiment)]))
        errors = train_together(runs, stacks)[1]
        restart = live[0].model_args.stage_init == "last" and index < len(stages) - 1
        still = []
        for experiment, error in zip(live, errors):
            if error:
                fail(experiment, error)
                failed = True
                continue
            results[id(experiment)].append(end_stage(experiment.model, trainers[id(experiment)], groups,
                                                     experiment.eval_sets(), restart))
            still.append(experiment)
        live = still
    for experiment in live:
        experiment.finish(trainers[id(experiment)], results[id(experiment)], started)
    return int(failed)


def share_frozen(models, rules):
    """Point every model at the first model's copy of each parameter that all models hold equal and
    that `rules` do not train (the frozen base): one copy in memory. Returns the names of the
    per-run parameters (trained by `rules`, or differing between runs)."""
    base = dict(models[0].named_parameters(remove_duplicate=False))
    per_run = {name for name in base if any(rule(name) for rule in rules)}
    for model in models[1:]:
        for name, param in list(model.named_parameters(remove_duplicate=False)):
            if name in per_run or param is base[name]:
                continue
            if torch.equal(param, base[name]):
                set_parameter(model, name, base[name])
            else:
                per_run.add(name)
    return sorted(per_run & set(dict(models[0].named_parameters())))


class RunStacks:
    """The per-run tensors of a pack, stored stacked: one tensor [runs, ...] per name, row i run i's.

    Each run's model holds its row as its own parameter (a view of the stack: its Trainer, optimizer,
    clipping, evaluations, restores and saved delta see an ordinary parameter), and once the stacks
    have gradients, each row's gradient is a view of its stack's gradient. A packed step then hands
    the stacks to the vmapped forward as they are: no stacking of every run's tensors before it and
    no splitting of the gradients after it, which would cost launches in proportion to the runs.
    Build it after `set_trainable` and before the runs' optimizers."""

    def __init__(self, models, names):
        self.stacks, self.rows = {}, [[] for _ in models]
        # every name of each stacked tensor (tied names too, the same in every run's model):
        # functional_call then needs no search for tied weights at each call
        name_of = {id(models[0].get_parameter(name)): name for name in names}
        self.names = {alias: name_of[id(param)] for alias, param in models[0].named_parameters(remove_duplicate=False)
                      if id(param) in name_of}
        aliases = {name: [] for name in names}
        for alias, name in self.names.items():
            aliases[name].append(alias)
        for name in names:
            own = [model.get_parameter(name) for model in models]
            stack = torch.stack([param.detach() for param in own]).requires_grad_(own[0].requires_grad)
            self.stacks[name] = stack
            for i, (model, param) in enumerate(zip(models, own)):
                row = nn.Parameter(stack[i].detach(), requires_grad=param.requires_grad)
                for alias in aliases[name]:
                    set_parameter(model, alias, row)
                self.rows[i].append((row, stack))
        self.linked = False

    def of_runs(self, runs):
        """{name: the rows of `runs`}, under every name of each tensor."""
        everyone = list(runs) == list(range(len(self.rows)))
        rows = {name: stack if everyone else stack[runs] for name, stack in self.stacks.items()}
        return {alias: rows[name] for alias, name in self.names.items()}

    def link_gradients(self):
        """After the first backward: every row's gradient becomes a view of its stack's gradient."""
        if self.linked:
            return
        for i, rows in enumerate(self.rows):
            for row, stack in rows:
                if stack.grad is not None:
                    row.grad = stack.grad[i]
        self.linked = True

    def zero_grad(self):
        """Zero the stacks' gradients in place (their rows' views stay)."""
        grads = [stack.grad for stack in self.stacks.values() if stack.grad is not None]
        if grads:
            torch._foreach_zero_(grads)


def set_parameter(model, name, param):
    """Make `param` the tensor that `model` holds under `name` (a dotted path)."""
    owner, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(owner), leaf, param)


class PackedRun:
    """One run's side of a packed stage: its Trainer, data, optimizer, schedule and losses."""

    def __init__(self, trainer):
        """Build it right after the Trainer: the loader's sampler takes its seed from the Trainer's
        `set_seed(args.seed)` (accelerate's seedable sampler), which gives the run its data order."""
        self.trainer = trainer
        args = trainer.args
        loader = trainer.get_train_dataloader()
        self.max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * len(loader))
        self.batches = epochs(loader)
        trainer.create_optimizer_and_scheduler(num_training_steps=self.max_steps)
        trainer.state = TrainerState(max_steps=self.max_steps)
        trainer.state.compute_steps(args, self.max_steps)
        self.trained = [p for p in trainer.model.parameters() if p.requires_grad]
        self.losses, self.error, self.done, self.epoch = [], None, False, 0.0

    def update(self, flow):
        """The Trainer's step after the backward: clip, AdamW, schedule (the gradients are zeroed for
        all runs at once: `RunStacks.zero_grad`); then evaluate or stop when the Trainer's flow says so."""
        trainer, args, state = self.trainer, self.trainer.args, self.trainer.state
        if args.max_grad_norm is not None and args.max_grad_norm > 0:  # as Trainer.train: 0 turns clipping off
            torch.nn.utils.clip_grad_norm_(self.trained, args.max_grad_norm)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        state.global_step += 1
        state.epoch = self.epoch
        trainer.control = flow.on_step_end(args, state, trainer.control)
        try:  # a non-finite loss (noted on the device, no sync per step) fails this run, as a single one
            if trainer.control.should_training_stop:
                trainer.check_finite_loss()
            if trainer.control.should_evaluate:
                with trainer.tracking():
                    trainer.evaluate()
        except UserError as error:
            self.error = str(error)
        self.done = self.error is not None or trainer.control.should_training_stop


def epochs(loader):
    """Batches of `loader` epoch after epoch, as Trainer.train draws them (set_epoch per epoch)."""
    for epoch in itertools.count():
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for index, batch in enumerate(loader):
            yield epoch + (index + 1) / len(loader), batch


def pad_to_common_length(batches, pad_token_id):
    """Stack the runs' batches into one; shorter ones are padded (masked positions change nothing)."""
    length = max(batch["input_ids"].size(-1) for batch in batches)
    stacked = {}
    for name in batches[0]:
        tensors = [batch[name] for batch in batches]
        if tensors[0].dim() == 2:
            value = pad_token_id if name == "input_ids" else 0
            tensors = [torch.nn.functional.pad(t, (0, length - t.size(-1)), value=value) for t in tensors]
        stacked[name] = torch.stack(tensors)
    return stacked


def packed_loss(model, compile_options=None):
    """The runs' losses in one call: `model`'s loss under vmap over the runs' tensors (a dict of
    stacks) and their batches (stacked); with `compile_options`, compiled by torch.compile(**options)."""
    def loss(params, batch):
        return functional_call(model, params, args=(), kwargs=batch, tie_weights=False)["loss"]

    batched = vmap(loss, randomness="different")
    return batched if compile_options is None else torch.compile(batched, **compile_options)


def compile_options(args):
    """torch.compile's options from the Trainer's --torch_compile* arguments; None without --torch_compile."""
    if not args.torch_compile:
        return None
    return {"backend": args.torch_compile_backend, "mode": args.torch_compile_mode}  # backend: set by the Trainer


def backward_together(batched_loss, stacks, batches, pad_token_id, bf16=False):
    """Forward and backward of several runs at once through `batched_loss` (`packed_loss`).

    stacks: the runs' own tensors (`RunStacks`, row i run i's); batches: run i's batch, or None for a
    run that sits this step out. Runs whose batches have the same size go through one call (their
    rows of the stacks, the model's other tensors shared), padded to a common length. Returns the
    runs' losses (detached; None where no batch); the runs' parameters get their gradients."""
    device = next(iter(stacks.stacks.values())).device
    # vmap has no batching rule for CPU flash attention (it would loop over the runs, with a warning);
    # the math backend is plain batched matmuls. CUDA's attention kernels have batching rules.
    cpu = device.type == "cpu"
    drawn = [i for i, batch in enumerate(batches) if batch is not None]
    losses, total = [None] * len(batches), 0
    size = lambda i: len(batches[i]["labels"])  # noqa: E731
    for _, group in itertools.groupby(sorted(drawn, key=size), key=size):
        group = list(group)
        rows = stacks.of_runs(group)
        batch = pad_to_common_length([batches[i] for i in group], pad_token_id)
        attention = sdpa_kernel(SDPBackend.MATH) if cpu else contextlib.nullcontext()
        with attention, torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            group_losses = batched_loss(rows, batch)
        total = total + group_losses.sum()
        for i, value in zip(group, group_losses.detach()):
            losses[i] = value
    total.backward()
    stacks.link_gradients()
    return losses


def train_together(runs, stacks):
    """Train one stage of every run's model at once (as `trainer.train()` each would); `stacks` holds
    the runs' own tensors (`RunStacks`, rows in the order of `runs`). Returns (per-run step losses as
    1-D tensors, per-run error or None)."""
    first = runs[0].trainer
    model, pad_token_id = first.model, first.data_collator.pad_token_id
    batched_loss = packed_loss(model, compile_options(first.args))
    flow = DefaultFlowCallback()
    while not all(run.done for run in runs):
        if not model.training:  # after an evaluation (walking a large model's modules every step costs)
            model.train()
        drawn = [None if run.done else next(run.batches) for run in runs]
        losses = backward_together(batched_loss, stacks, [d and d[1] for d in drawn], pad_token_id, first.args.bf16)
        for run, step, loss in zip(runs, drawn, losses):
            if step is not None:
                run.losses.append(loss)
                run.trainer.note_loss(loss)
                run.epoch = step[0]
                run.update(flow)
        stacks.zero_grad()
    return [torch.stack(run.losses) for run in runs], [run.error for run in runs]
