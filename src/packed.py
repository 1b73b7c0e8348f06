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
(rows of the stacks' gradients).

Everything else is each run's own, as in a single run: each run goes through the stage loop
(`train_in_stages`) and its Trainer's `train()` in a thread of its own (`Pack`); only the forward and
backward of its training step are the pack's (`PackedTrainer.training_step` hands its batch in and
gets its loss and gradients back). So its Trainer builds its data loader, AdamW, schedule and state,
clips, steps, evaluates (every --eval_steps or every epoch), logs, saves and reports (--report_to)
through its own callbacks. With `--torch_compile` the vmapped forward (and so its backward) is
compiled with the run's `--torch_compile_backend`/`--torch_compile_mode`, and each run's evaluation
as in a single run.

A run whose data is missing or whose loss turns non-finite fails with its own `error:` line; the
others go on (exit status 1). Setups that cannot share the base, or that the Trainer changes in the
training step a pack replaces, run one after another instead (`why_not_packed`).
With dropout > 0 every run draws its own masks (vmap randomness="different"), from another random
stream than a single run: equal in distribution, not bit for bit; with dropout 0 the results equal
the single runs' within float noise (tests/test_packed.py).
"""
import collections
import functools
import gc
import itertools
import sys
import threading
import time
from typing import Callable, List

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from src.dataset import uses_template
from src.delta import METHODS, trained_by
from src.errors import UserError
from src.multirun import run_label
from src.trainer import DeltaTrainer


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
    if args.gradient_accumulation_steps != 1:
        return "gradient accumulation"
    if args.fp16:
        return "fp16 loss scaling"
    if args.world_size > 1:
        return "several processes"
    optim = args.optim.value
    if optim in ("lomo", "adalomo") or optim.startswith("schedule_free"):
        return f"--optim {optim} works inside the Trainer's training step"
    if args.torch_empty_cache_steps:
        return "--torch_empty_cache_steps works inside the Trainer's training step"
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
    pack = Pack([experiment.model for experiment in live], trained_by(live[0].stages.methods))
    for experiment, outcome in zip(live, pack.train([experiment.train for experiment in live])):
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
        args = trainers[runs[0]].args
        self.pad_token_id, self.bf16, self.compile_options = \
            trainers[runs[0]].data_collator.pad_token_id, args.bf16, compile_options(args)
        self.batched_losses = {}
        self.training.update(runs)
        return trainers

    def step(self, batches):
        """One training step of the runs of `batches` ({run: batch}): {run: loss}; their parameters
        hold their gradients."""
        template = min(batches)  # waits in this meeting: its model is free for functional_call
        if template not in self.batched_losses:
            self.batched_losses[template] = packed_loss(self.models[template], self.compile_options)
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
        name_of = {id(models[0].get_parameter(name)): name for name in names}
        self.names = {alias: name_of[id(param)] for alias, param in parameter_places(models[0]) if id(param) in name_of}
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


def parameter_places(model):
    """(name, parameter) once per place that holds a parameter (a module's attribute): a tied weight under
    each module holding it, but a module that several paths reach (the prefix-tuning pool that every layer
    of `adapters` holds) once. functional_call swaps a place once per name given, and restores it in that
    order: a place named twice would keep the swapped-in tensor."""
    return [(f"{prefix}.{leaf}" if prefix else leaf, param) for prefix, module in model.named_modules()
            for leaf, param in module.named_parameters(recurse=False)]


def set_parameter(model, name, param):
    """Make `param` the tensor that `model` holds under `name` (a dotted path)."""
    owner, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(owner), leaf, param)


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


