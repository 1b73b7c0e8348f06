"""Packed runs: runs of one setting trained together over one copy of the frozen base model.

    python run.py ... --learning_rate 1e-3 3e-4 --seed 13 21 42 --data_dir 'data/k-shot/SST-2/16-{seed}'

The command line becomes one run per (learning rate, seed) (`src/multirun.py`). Each run is
parsed, built, trained, scored, saved and logged exactly as the single run with its values would be.
Every run builds its model as a single run does (seeded with its --seed: the same prompt table and
adapters); the tensors equal in all runs (the frozen base) are then shared, one copy in memory
(`share_frozen`), the rest (each run's delta) are stored stacked along a leading run dimension.

Folded (the default; `train_folded`): the K runs' batches are folded into one batch through the
frozen base (src/fold.py): run k's rows are the batch's k-th chunk, the base runs once over all rows
with its own kernels (fused attention; no vmap), and each layer holding a run's own tensors is
replaced by its folded form, which applies run k's tensors to chunk k by batched operations (a bias:
one row of a per-run table per chunk; adapter matrices: `baddbmm` over per-run stacks; the soft
prompt: a lookup in run k's table). All runs' tensors live in one buffer [K, P]; each run's model
holds its rows as its own parameters, so its evaluations, best state and saved delta are as in a
single run. ONE Trainer drives the pack (`FoldedTrainer`, its own `train()` loop: the Trainer's
bookkeeping once per pack step, not K times): its data loader yields the runs' batches folded (each
from the run's own loader: its sampler and seed, so its data order), one backward of the runs' summed
losses gives each run its gradients, one `StackedAdamW` step updates every run at its own learning
rate and schedule after clipping each run's gradients by its own norm, one zeroing. Each run keeps a
Trainer of its own (`FoldedRunTrainer`) for all that is per run: its callbacks (progress bar,
printer, --report_to loggers, flow) get every event with its arguments and the pack's progress
(`FanOut`), its loss, gradient norm and learning rate are logged through it, each evaluation (every
--eval_steps or every epoch) scores every run in folded batches and hands each run's Trainer its
logits (dev history, best state, log as in a single run). After each stage, each run's best state is
scored by its own Trainer (multi-stage: the next stage folds again). Dropout draws each row's masks
from the process's one stream: each run gets its own masks, not a single run's bit for bit.

Vmapped (`Pack`; where the runs cannot fold, `why_not_folded` says why in a `note:`): the prefix
tuning of the adapters library (its prefix is computed once per batch, not per row), DeBERTa (its
attention projects position embeddings too), a delta in modules without a folded form (LoRA of the
adapters library: raw parameters in its own module; a layer with hooks: ModernBERT's decoder),
checkpoints (--save_strategy), other optimizers, training sets of different sizes. Each run then goes
through its stage loop and its own Trainer's `train()` in a thread of its own; only the forward and
backward of a training step are shared: one model through `torch.func.functional_call` under
`torch.func.vmap` (base unbatched, stacks and batches batched; math attention, which vmap supports on
every device), never compiled (a compiled vmapped step diverged; --torch_compile says so in its note).

With --torch_compile, the folded pack's Trainer compiles the folded model as a single run's Trainer
compiles its model (its steps draw random numbers as the compiled step does: `compiled_random_numbers`).

A run whose data is missing or whose loss turns non-finite fails with its own `error:` line (in a
folded pack at its next evaluation or at the end, as in a single run; its rows go on apart from the
others'); the others go on (exit status 1). Setups that cannot share the base at all, or that the
Trainer changes in the training step a pack replaces, run one after another instead (`why_not_packed`).
With dropout 0 the results equal the single runs' within float noise (tests/test_packed.py).
"""
import collections
import contextlib
import copy
import functools
import gc
import itertools
import math
import sys
import threading
import time
import warnings
from typing import Callable, List

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.trainer_utils import PredictionOutput

from src.dataset import uses_template
from src.delta import METHODS, set_trainable, trained_by
from src.errors import UserError
from src.fold import FlatStacks, FoldedModel, aliases, set_parameter, why_not_foldable
from src.multirun import run_label
from src.trainer import (DeltaTrainer, best_state, compiled_random_numbers, longest_first, score_splits,
                         stage_result, why_not_lean)


def describe(experiment):
    return run_label(experiment.args.seed, experiment.args.learning_rate)


def fail(experiment, error):
    print(f"error: run {describe(experiment)}: {error}", file=sys.stderr)


def why_not_packed(experiment):
    """Why this run's setup cannot share the frozen base with others, or None."""
    args, model_args = experiment.args, experiment.model_args
    if not experiment.trains:
        return "nothing is trained"
    if not uses_template(model_args.few_shot_type):
        return "finetune mode trains a new head per run"
    trains_base = [name for name in experiment.stages.methods if METHODS[name].trains_base]
    if trains_base:
        return f"{trains_base[0]!r} trains the base model itself"
    if args.label_smoothing_factor > 0:
        return "the Trainer's label smoothing replaces the model's loss"
    if args.neftune_noise_alpha:
        return "the Trainer's NEFTune noise on the embeddings"
    return why_not_lean(args)  # the Trainer's own training step, which a pack replaces, must run


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
    per_run = share_frozen([experiment.model for experiment in live], trained_by(live[0].stages.methods))
    reason = why_not_folded(live, per_run)
    if reason is None:
        outcomes = train_folded(live, per_run)
    else:
        uncompiled = "; their training steps are not compiled" if live[0].args.torch_compile else ""
        print(f"note: {len(live)} runs packed through vmap, not folded into one batch ({reason}){uncompiled}",
              file=sys.stderr)
        pack = Pack([experiment.model for experiment in live], trained_by(live[0].stages.methods))
        outcomes = pack.train([experiment.train for experiment in live])
    for experiment, outcome in zip(live, outcomes):
        if isinstance(outcome, UserError):
            fail(experiment, outcome)
            failed = True
        else:
            stage_results, trainer = outcome
            experiment.finish(trainer, stage_results, started)
    return int(failed)


class Stopped(Exception):
    """Raised in a run's thread when the pack stops (another run's fatal error, Ctrl-C)."""


class Meeting:
    """Runs hand values in until every member has; then one of them acts for all (`Pack.meet`)."""

    def __init__(self, members, act):
        self.members, self.act = members, act
        self.values, self.results, self.done = {}, {}, False


class Pack:
    """The runs of a pack, each in a thread of its own going through its stage loop and its Trainer's
    `train()` as a single run does. One run's code runs at a time, the others wait for their turn
    (the Trainer, accelerate, whose GradientState tracks "the" active data loader, and torch keep
    process-wide state); a run hands the turn on when it waits at a meeting or ends, to the next run
    that can go on (one thread woken per hand-over). The runs meet at two points:

    - a stage's start: once every run has set its stage's trainable tensors, one thread builds every
      run's Trainer (a `PackedTrainer`; building one seeds the process, so in run order), then the
      stacks of the runs' own tensors (`RunStacks`);
    - each training step: once every run still training has handed in its batch, one thread computes
      all their losses and gradients in one vmapped forward and backward, with the model of a run
      that waits there (`functional_call` swaps its tensors during the call).

    A run that fails (UserError) leaves every meeting, the others go on. Any other exception, or
    Ctrl-C, stops every run at its next meeting and is raised in the calling thread.
    """

    def __init__(self, models, trained):
        self.models = models
        self.per_run = share_frozen(models, trained)
        self.lock = threading.Lock()  # guards what follows (one run goes on at a time; and stop)
        self.turns = [threading.Semaphore(0) for _ in models]  # released: that run's turn
        self.ready = collections.deque()  # runs that can go on, in the order they take their turns
        self.live = set(range(len(models)))  # runs not finished or failed
        self.training = set()  # runs inside this stage's Trainer.train()
        self.meetings = {}  # name -> the meeting gathering now
        self.stopped = None  # the exception that stops every run

    def train(self, jobs: List[Callable]) -> list:
        """`job(train_stage)` for each run in a thread of its own (`train_stage`: the run's stage
        function for `train_in_stages`); returns what each job returned, or its UserError."""
        outcomes, ended = [None] * len(jobs), [threading.Event() for _ in jobs]
        # Each Trainer.train starts with a full garbage collection (accelerate's free_memory): without
        # this, every run's would walk every run's model and data, built already and kept to the end.
        gc.freeze()
        for run, job in enumerate(jobs):
            threading.Thread(target=self.work, args=(run, job, outcomes, ended[run]), name=f"packed run {run}",
                             daemon=True).start()
        with self.lock:
            self.ready.extend(range(len(jobs)))
            self.hand_on()
        try:
            wait(ended)
        except BaseException as error:  # Ctrl-C: every run stops at its next meeting (twice: at once)
            self.stop(error)
            wait(ended)
            raise
        finally:
            gc.unfreeze()
        if self.stopped is not None:
            raise self.stopped
        return outcomes

    def work(self, run, job, outcomes, ended):
        try:
            self.take_turn(run)
            outcomes[run] = job(functools.partial(self.train_stage, run))
        except UserError as error:
            outcomes[run] = error
        except Stopped:
            pass
        except BaseException as error:
            self.stop(error)
        finally:
            with self.lock:
                self.live.discard(run)
                self.training.discard(run)
                self.settle(run)
                self.hand_on()
            ended.set()

    def stop(self, error):
        with self.lock:
            self.halt(error)

    def halt(self, error):
        """Stop every run (with the lock): each waiting one goes on, to raise Stopped."""
        if self.stopped is None:
            self.stopped = error
            for turn in self.turns:
                turn.release()

    def take_turn(self, run):
        self.turns[run].acquire()
        if self.stopped is not None:
            raise Stopped

    def hand_on(self):
        """Give the turn to the next run that can go on (with the lock, by the run whose turn it is)."""
        if self.ready:
            self.turns[self.ready.popleft()].release()

    def train_stage(self, run, make_trainer, model):
        """Run `run`'s stage function (see `train_in_stages`): its Trainer's train(), beside the others'."""
        trainer = self.meet("start", run, functools.partial(make_trainer, model), self.live, self.start)
        try:
            trainer.train()
        finally:
            with self.lock:
                self.training.discard(run)
                self.settle(run)
        return trainer

    def meet(self, name, run, value, members, act):
        """Hand `value` in at meeting `name`; once every run of `members` (which shrinks as runs leave)
        has, the run whose turn it is calls act({run: value}) -> {run: result}. Returns this run's result."""
        with self.lock:
            if self.stopped is not None:
                raise Stopped
            meeting = self.meetings.setdefault(name, Meeting(members, act))
            meeting.values[run] = value
            self.settle(run)
            if not meeting.done:
                self.hand_on()
        if not meeting.done:
            self.take_turn(run)
        return meeting.results[run]

    def settle(self, run):
        """Hold each meeting that all its members have come to (with the lock, by `run`, whose turn it
        is): its other runs can go on."""
        for name, meeting in list(self.meetings.items()):
            if meeting.members <= meeting.values.keys() and self.stopped is None:
                del self.meetings[name]
                try:
                    meeting.results = meeting.act(meeting.values)
                except BaseException as error:
                    self.halt(error)
                    return
                meeting.done = True
                self.ready.extend(other for other in meeting.values if other != run)

    def start(self, make_trainers):
        """A stage's start: every run's Trainer, then the stacks of their own tensors."""
        runs = sorted(make_trainers)
        trainers = {run: make_trainers[run](trainer_class=PackedTrainer) for run in runs}
        for run, trainer in trainers.items():
            trainer.pack_step = functools.partial(self.meet, "step", run, members=self.training, act=self.step)
        self.stacks = RunStacks([self.models[run] for run in runs], self.per_run)
        self.rows = {run: row for row, run in enumerate(runs)}
        self.pad_token_id, self.bf16 = trainers[runs[0]].data_collator.pad_token_id, trainers[runs[0]].args.bf16
        self.batched_losses = {}
        self.training.update(runs)
        return trainers

    def step(self, batches):
        """One training step of the runs of `batches` ({run: batch}): {run: loss}; their parameters
        hold their gradients."""
        template = min(batches)  # waits in this meeting: its model is free for functional_call
        if template not in self.batched_losses:
            self.batched_losses[template] = packed_loss(self.models[template])
        if not self.models[template].training:  # after an evaluation
            self.models[template].train()
        by_row = [None] * len(self.rows)
        for run, batch in batches.items():
            by_row[self.rows[run]] = batch
        losses = backward_together(self.batched_losses[template], self.stacks, by_row, self.pad_token_id, self.bf16)
        return {run: losses[self.rows[run]] for run in batches}


def wait(events: List[threading.Event]) -> None:
    """Wait until every event is set. With a timeout: Ctrl-C's signal may reach another thread, and
    then interrupts only a wait that wakes by itself (and an interrupted Thread.join may leave the
    thread marked as ended while it runs on: bpo-45274's fix)."""
    for event in events:
        while not event.wait(0.5):
            pass


class PackedTrainer(DeltaTrainer):
    """A run's Trainer in a pack: `train()` as in a single run, but the forward and backward of each
    training step are the pack's (`pack_step(batch) -> loss`, set by `Pack.start`)."""

    flattens_trained = False  # the pack holds the runs' tensors in stacks of its own

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A single run's data order comes from the seed its Trainer set in the process (accelerate's
        # seedable sampler); the pack's Trainers are built one after another, so each takes its own.
        if self.accelerator.dataloader_config.data_seed is None:
            self.accelerator.dataloader_config.data_seed = self.args.seed
        self.pack_step = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = self.pack_step(inputs)
        self.note_loss(loss)
        return loss


def share_frozen(models, trained):
    """Point every model at the first model's copy of each parameter that all models hold equal and
    that are not `trained` (name -> bool; the frozen base): one copy in memory. Returns the names of
    the per-run parameters (trained, or differing between runs)."""
    base = dict(models[0].named_parameters(remove_duplicate=False))
    per_run = {name for name in base if trained(name)}
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
    clipping, evaluations, restores and saved delta see an ordinary parameter), and after each
    backward, each row's gradient is a view of its stack's gradient. A packed step then hands
    the stacks to the vmapped forward as they are: no stacking of every run's tensors before it and
    no splitting of the gradients after it, which would cost launches in proportion to the runs.
    Build it after `set_trainable` and before the runs' optimizers."""

    def __init__(self, models, names):
        self.stacks, self.rows = {}, [[] for _ in models]
        # every place of each stacked tensor (tied names too, the same in every run's model): functional_call
        # then needs no search for tied weights at each call
        places = aliases(models[0], names)
        self.names = {place: name for name in names for place in places[name]}
        for name in names:
            own = [model.get_parameter(name) for model in models]
            stack = torch.stack([param.detach() for param in own]).requires_grad_(own[0].requires_grad)
            self.stacks[name] = stack
            for i, (model, param) in enumerate(zip(models, own)):
                row = nn.Parameter(stack[i].detach(), requires_grad=param.requires_grad)
                for place in places[name]:
                    set_parameter(model, place, row)
                self.rows[i].append((row, stack))
        self.gradients = None  # per run: (row, the view of its stack's gradient), once there are gradients

    def of_runs(self, runs):
        """{name: the rows of `runs`}, under every name of each tensor."""
        everyone = list(runs) == list(range(len(self.rows)))
        rows = {name: stack if everyone else stack[runs] for name, stack in self.stacks.items()}
        return {alias: rows[name] for alias, name in self.names.items()}

    def link_gradients(self, runs):
        """After a backward: the gradient of each row of `runs` is the view of its stack's gradient (the
        Trainer sets its parameters' gradients to None after each step)."""
        if self.gradients is None:
            self.gradients = [[(row, stack.grad[i]) for row, stack in rows if stack.grad is not None]
                              for i, rows in enumerate(self.rows)]
        for i in runs:
            for row, gradient in self.gradients[i]:
                row.grad = gradient

    def zero_grad(self):
        """Zero the stacks' gradients in place (their views stay)."""
        grads = [stack.grad for stack in self.stacks.values() if stack.grad is not None]
        if grads:
            torch._foreach_zero_(grads)


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


def packed_loss(model):
    """The runs' losses in one call: `model`'s loss under vmap over the runs' tensors (a dict of
    stacks) and their batches (stacked). Never compiled: a compiled vmapped step diverged (NaN losses where
    the eager one trains), so --torch_compile compiles a vmapped pack's evaluations only."""
    def loss(params, batch):
        return functional_call(model, params, args=(), kwargs=batch, tie_weights=False)["loss"]

    return vmap(loss, randomness="different")


def backward_together(batched_loss, stacks, batches, pad_token_id, bf16=False):
    """Forward and backward of several runs at once through `batched_loss` (`packed_loss`).

    stacks: the runs' own tensors (`RunStacks`, row i run i's); batches: run i's batch, or None for a
    run that sits this step out. Runs whose batches have the same size go through one call (their
    rows of the stacks, the model's other tensors shared), padded to a common length. Returns the
    runs' losses (detached; None where no batch); the runs' parameters hold their gradients."""
    stacks.zero_grad()
    device = next(iter(stacks.stacks.values())).device
    drawn = [i for i, batch in enumerate(batches) if batch is not None]
    losses, total = [None] * len(batches), 0
    size = lambda i: len(batches[i]["labels"])  # noqa: E731
    for _, group in itertools.groupby(sorted(drawn, key=size), key=size):
        group = list(group)
        rows = stacks.of_runs(group)
        batch = pad_to_common_length([batches[i] for i in group], pad_token_id)
        # The math attention backend, plain batched matmuls: vmap has no batching rule for CPU flash
        # attention (it would loop over the runs), and on CUDA the memory-efficient kernel, the one
        # that takes our masks, fails in its backward under vmap ("LSE is not correctly aligned").
        with sdpa_kernel(SDPBackend.MATH), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            group_losses = batched_loss(rows, batch)
        total = total + group_losses.sum()
        for i, value in zip(group, group_losses.detach()):
            losses[i] = value
    total.backward()
    stacks.link_gradients(drawn)
    return losses




# Optimizers the folded pack writes over its stacks (`StackedAdamW`): the Trainer's AdamW.
FOLDED_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")


def why_not_folded(experiments, per_run):
    """Why these runs (prepared, their frozen base shared; `per_run`: their own tensors' names) cannot
    fold into one batch through one Trainer, or None; they then pack through vmap (`Pack`)."""
    first, args = experiments[0], experiments[0].args
    if args.save_strategy != "no":
        return "a checkpoint holds its run's own optimizer state and Trainer state"
    if args.optim.value not in FOLDED_OPTIMIZERS:
        return f"--optim {args.optim.value}: the folded pack steps AdamW over the runs' stacks"
    if "min_lr" in (args.lr_scheduler_kwargs or {}):
        return "an absolute min_lr in --lr_scheduler_kwargs (the folded schedule scales each run's rate)"
    if len({len(experiment.datasets["train"]) for experiment in experiments}) > 1:
        return "the runs' training sets differ in size (their epochs would end at different steps)"
    return why_not_foldable(first.model, per_run, first.model.config.model_type)


def train_folded(experiments, per_run):
    """Train the runs' stages together: per stage, each run's Trainer (`FoldedRunTrainer`: its data
    loader, callbacks, evaluations' bookkeeping, best state) and one `FoldedTrainer` whose `train()`
    drives them all. Returns, per run, (stage results, its last Trainer) or its UserError."""
    models, stages = [experiment.model for experiment in experiments], experiments[0].stages
    results, trainers, failures = [[] for _ in experiments], [None] * len(experiments), {}
    for index, (methods, spec) in enumerate(zip(stages, stages.specs)):
        live = [run for run in range(len(experiments)) if run not in failures]
        if not live:
            break
        for run in live:
            set_trainable(models[run], methods)
        for run in live:
            trainers[run] = experiments[run].make_trainer(models[run], trainer_class=FoldedRunTrainer)
        pack = FoldedTrainer([trainers[run] for run in live], [models[run] for run in live], per_run)
        pack.train()
        last_stage = index == len(stages) - 1
        with contextlib.ExitStack() as states:  # as `end_stage`, with every split scored folded
            for position, run in enumerate(live):
                if position in pack.failures:
                    failures[run] = pack.failures[position]
                    continue
                restart = experiments[run].model_args.stage_init == "last" and not last_stage
                states.enter_context(best_state(models[run], trainers[run], restart))
            # the last stage: the record's other splits too (`Experiment.finish` scores them in this state)
            splits = experiments[live[0]].final_splits() if last_stage else list(experiments[live[0]].eval_sets())
            pack.give_logits([{split: experiments[run].datasets[split] for split in splits} for run in live])
            for position, run in enumerate(live):
                if run not in failures:
                    results[run].append(stage_result(trainers[run], spec,
                                                     score_splits(trainers[run], experiments[run].eval_sets())))
    return [failures.get(run) or (results[run], trainers[run]) for run in range(len(experiments))]


class FoldedLoader:
    """The runs' training data loaders (each its own sampler and seed, as in a single run) in lockstep:
    each batch is theirs folded into one (`fold_batches`)."""

    def __init__(self, loaders, pad_token_id):
        self.loaders, self.pad_token_id = loaders, pad_token_id
        self.dataset = loaders[0].dataset

    def __len__(self):
        return len(self.loaders[0])

    def set_epoch(self, epoch):
        for loader in self.loaders:
            loader.set_epoch(epoch)

    def __iter__(self):
        iterators = [iter(loader) for loader in self.loaders]
        for batch in iterators[0]:
            yield fold_batches([batch] + [next(iterator) for iterator in iterators[1:]], self.pad_token_id)
        for iterator in iterators[1:]:  # each loader ends its epoch (accelerate's end of data loader)
            next(iterator, None)


def fold_batches(batches, pad_token_id):
    """The runs' batches (of equal sizes) as one: padded to a common length, run k's rows the k-th chunk."""
    return {name: tensor.flatten(0, 1) for name, tensor in pad_to_common_length(batches, pad_token_id).items()}


class StackedAdamW(torch.optim.Optimizer):
    """AdamW (torch's arithmetic) over every run's tensors at once (`FlatStacks`' buffer [K, P]), each
    run at its own learning rate (`learning_rates` times the group's rate, which the Trainer's schedule
    sets, starting at 1), each run's gradients first clipped to `max_grad_norm` by its own norm."""

    def __init__(self, stacks, learning_rates, betas, eps, weight_decay, decays, max_grad_norm):
        super().__init__([stacks.data], {"lr": 1.0})
        self.stacks, self.betas, self.eps, self.max_grad_norm = stacks, betas, eps, max_grad_norm
        self.learning_rates = torch.tensor(learning_rates, dtype=torch.float64, device=stacks.data.device)
        self.decay = (decays & stacks.trained).to(stacks.data.dtype) * weight_decay if weight_decay else None
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(stacks.data), torch.zeros_like(stacks.data)
        self.steps, self.norms = 0, None

    @torch.no_grad()
    def step(self, closure=None):
        data, grad, (beta1, beta2) = self.stacks.data, self.stacks.grad, self.betas
        if self.max_grad_norm > 0:
            self.norms = torch.linalg.vector_norm(grad, dim=1)
            grad.mul_((self.max_grad_norm / (self.norms + 1e-6)).clamp(max=1.0).unsqueeze(1))
        self.steps += 1
        rates = self.learning_rates * self.param_groups[0]["lr"]
        if self.decay is not None:
            data.mul_(1 - rates.float().unsqueeze(1) * self.decay)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denominator = (self.exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** self.steps)).add_(self.eps)
        step_sizes = (rates / (1 - beta1 ** self.steps)).float().unsqueeze(1)
        data.sub_(self.exp_avg / denominator * step_sizes)

    def zero_grad(self, set_to_none=True):
        self.stacks.zero_grad()


class FanOut:
    """The folded pack's callback handler: each event goes to every live run's own callbacks (its
    progress bar, printer, --report_to loggers, flow), with the run's arguments and its state (the
    pack's progress; its own log history), so that they act as in a single run."""

    EVENTS_WITH_RUN_DATA = ("on_log", "on_evaluate")  # sent by each run's Trainer (FoldedTrainer.log, .evaluate)

    def __init__(self, pack):
        self.pack, self.callbacks = pack, []

    def __getattr__(self, event):
        if not event.startswith("on_") or event in self.EVENTS_WITH_RUN_DATA:
            raise AttributeError(event)

        def call(args, state, control, **kwargs):
            for trainer in self.pack.live():
                sync_state(trainer, state)
                control = getattr(trainer.callback_handler, event)(trainer.args, trainer.state, control, **kwargs)
            for callback in self.callbacks:  # the pack's own (add_callback): the pack's arguments and progress
                control = getattr(callback, event)(args, state, control, **kwargs) or control
            return control
        return call

    def add_callback(self, callback):
        """A callback of the pack itself (e.g. a clock or a profiler): it gets every event, after the runs'."""
        self.callbacks.append(callback() if isinstance(callback, type) else callback)

    def __setattr__(self, name, value):
        if name in ("optimizer", "lr_scheduler", "train_dataloader"):
            for trainer in self.pack.runs:
                setattr(trainer.callback_handler, name, value)
        object.__setattr__(self, name, value)


def sync_state(trainer, state, control=None):
    """Give a run's Trainer the pack's progress (step, epoch, totals; its log history stays its own)
    and the pack's `control` (what its callbacks decide, the pack's Trainer acts on)."""
    own = ("log_history", "best_metric", "best_global_step", "best_model_checkpoint", "stateful_callbacks")
    trainer.state.__dict__.update({key: value for key, value in vars(state).items() if key not in own})
    if control is not None:
        trainer.control = control


class FoldedRunTrainer(PackedTrainer):
    """A run's Trainer in a folded pack: its data loader, callbacks and evaluation bookkeeping (dev
    history, best state, logs) serve the pack's `FoldedTrainer`, which hands it its scores' logits."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.given = {}  # id(dataset) -> the logits the pack computed for this run on it, in its order

    def predict(self, test_dataset, *args, **kwargs):
        """The logits the pack computed for this run on the dataset (once; `test_dataset` is its longest-first
        Subset: `DeltaTrainer.score`), else a prediction as in a single run."""
        logits = self.given.pop(id(getattr(test_dataset, "dataset", None)), None)
        if logits is None:
            return super().predict(test_dataset, *args, **kwargs)
        return PredictionOutput(predictions=logits, label_ids=None, metrics={})


class FoldedTrainer(DeltaTrainer):
    """The Trainer of a folded pack: its `train()` (the Trainer's loop, once per pack step) trains every
    run at once over a `FoldedModel`: batches from every run's own loader folded into one, one backward
    of the runs' summed losses, one `StackedAdamW` step (each run's rate and clipping), one zeroing.
    Each run's loss, gradient norm and rate are logged through its own Trainer; each evaluation scores
    every run in folded batches and hands each run's Trainer its logits. A run whose loss turned
    non-finite leaves the pack at the next evaluation or at the end (`failures`: position -> UserError);
    its rows go on being computed, apart from every other run's."""

    def __init__(self, runs, models, per_run):
        self.runs, self.failures = runs, {}
        stacks = FlatStacks(models, per_run, aliases(models[0], per_run))
        decays = set(runs[0].get_decay_parameter_names(models[0]))
        self.decays = torch.cat([torch.full((stacks.stacks[name][0].numel(),), name in decays, dtype=torch.bool)
                                 for name in per_run]).to(stacks.data.device)
        args = copy.copy(runs[0].args)
        args.learning_rate, args.max_grad_norm, args.report_to = 1.0, 0.0, []  # the runs' own: StackedAdamW, runs
        collator = runs[0].data_collator
        super().__init__(model=FoldedModel(models[0], stacks, len(runs)), args=args, data_collator=collator,
                         train_dataset=runs[0].train_dataset, eval_dataset=runs[0].eval_dataset, task=runs[0].task)
        self.model_accepts_loss_kwargs = False
        self.callback_handler = FanOut(self)
        self.stacks, self.pad_token_id = stacks, collator.pad_token_id
        self._flat = [stacks]  # zeroed in place (`take_over_zero_grad`)
        self.losses = torch.zeros(len(runs), device=stacks.data.device)  # each run's loss since its last log
        self.totals = [0.0] * len(runs)  # each run's logged losses, summed (the Trainer's train_loss)
        self.finite = torch.ones(len(runs), dtype=torch.bool, device=stacks.data.device)

    def live(self):
        return [trainer for position, trainer in enumerate(self.runs) if position not in self.failures]

    def train(self, *args, **kwargs):
        with contextlib.ExitStack() as tracking, warnings.catch_warnings():
            # the stacks' gradients are views of one buffer [K, P], by design (one optimizer step, one zeroing)
            warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
            for trainer in self.runs:
                tracking.enter_context(trainer.tracking())
            output = super().train(*args, **kwargs)
            self.check_runs()
        return output

    def get_train_dataloader(self):
        return FoldedLoader([trainer.get_train_dataloader() for trainer in self.runs], self.pad_token_id)

    def create_optimizer(self):
        if self.optimizer is None:
            args = self.runs[0].args
            rates = [trainer.args.learning_rate for trainer in self.runs]
            self.optimizer = self.stacked_adamw = StackedAdamW(self.stacks, rates,
                                          (args.adam_beta1, args.adam_beta2), args.adam_epsilon, args.weight_decay,
                                          self.decays, args.max_grad_norm)
        return self.optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not model.training:
            model.train()
        self.take_over_zero_grad(model)  # the stacks' gradients stay views of one buffer (compiled too)
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager(), compiled_random_numbers(self.args):
            losses = model(**inputs)["loss"]
            self.accelerator.backward(losses.sum())
        losses = losses.detach()
        self.losses += losses
        self.finite &= torch.isfinite(losses)
        return losses.sum()

    def log(self, logs, start_time=None):
        """Each live run's Trainer logs its own loss, gradient norm and learning rate."""
        own = {}
        if "loss" in logs:  # every logging step: the losses since the last one
            steps = self.state.global_step - getattr(self, "_runs_logged_at", 0)
            self._runs_logged_at = self.state.global_step
            sums = self.losses.tolist()
            self.losses.zero_()
            self.totals = [total + value for total, value in zip(self.totals, sums)]
            own["loss"] = [round(value / steps, 4) for value in sums]
            if self.stacked_adamw.norms is not None:
                own["grad_norm"] = self.stacked_adamw.norms.tolist()
        if "train_loss" in logs:  # the end of training: with the losses not logged yet
            steps = max(self.state.global_step, 0.001)
            own["train_loss"] = [(total + value) / steps for total, value in zip(self.totals, self.losses.tolist())]
        if "learning_rate" in logs:
            own["learning_rate"] = [trainer.args.learning_rate * logs["learning_rate"] for trainer in self.runs]
        for position, trainer in enumerate(self.runs):
            if position not in self.failures:
                sync_state(trainer, self.state, self.control)
                trainer.log({**logs, **{key: values[position] for key, values in own.items()}}, start_time)

    def check_runs(self):
        """A run whose training loss turned non-finite fails (its Trainer's UserError), as a single run
        fails at its next evaluation or at the end."""
        finite = self.finite.tolist()
        for position, trainer in enumerate(self.runs):
            if position not in self.failures and not finite[position]:
                sync_state(trainer, self.state)
                trainer._all_finite = self.finite[position]
                try:
                    trainer.check_finite_loss()
                except UserError as error:
                    self.failures[position] = error

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """Score every live run on its dev set in folded batches; each run's Trainer takes its scores
        (its history, best state, log, callbacks) as in a single run."""
        self.check_runs()
        logits = self.folded_logits([trainer.eval_dataset for trainer in self.runs])
        for position, trainer in enumerate(self.runs):
            if position not in self.failures:
                sync_state(trainer, self.state, self.control)
                trainer.given[id(trainer.eval_dataset)] = logits[position]
                trainer.evaluate(metric_key_prefix=metric_key_prefix)
        return {}

    def give_logits(self, splits):
        """For each live run, its logits on each dataset of its `splits` ({name: dataset}, one dict per run of
        the pack), computed in folded batches, for its Trainer's next prediction of that dataset."""
        for name in splits[0]:
            datasets = [run_splits[name] for run_splits in splits]
            for position, logits in enumerate(self.folded_logits(datasets)):
                if position not in self.failures and logits is not None:
                    self.runs[position].given[id(datasets[position])] = logits

    def folded_logits(self, datasets):
        """Each run's logits on its dataset in its evaluation order (longest first), computed in folded
        batches (a failed run's rows too: the folded model's chunks are every run's); where the datasets
        differ in size, None: each run's Trainer predicts alone."""
        if len({len(dataset) for dataset in datasets}) > 1:
            return [None] * len(datasets)
        model, size = self.model_wrapped, self.args.eval_batch_size
        orders = [longest_first(dataset) for dataset in datasets]
        logits = [[] for _ in datasets]
        model.eval()
        with torch.inference_mode(), self.compute_loss_context_manager():
            for start in range(0, len(orders[0]), size):
                batches = [self.data_collator([dataset[i] for i in order[start:start + size]])
                           for dataset, order in zip(datasets, orders)]
                batch = self._prepare_inputs(fold_batches(batches, self.pad_token_id))
                batch.pop("labels", None)
                scores = model(**batch)["logits"].float().unflatten(0, (len(datasets), -1))
                for run, run_scores in enumerate(scores.cpu().numpy()):
                    logits[run].append(run_scores)
        return [np.concatenate(run_logits) for run_logits in logits]
