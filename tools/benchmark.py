"""Speed and memory benchmark of the prompt-based delta-tuning loop (figures: docs/PERFORMANCE.md).

    python tools/benchmark.py --model_size small --task SST-2 --data_dir ../shared/data/k-shot/SST-2/16-42

A RoBERTa-shaped masked LM with random weights is built from a config (no download) with the real
RoBERTa vocabulary (tokenizer of src/random_models.py). On the real k-shot data (train split
for the training batches, test split for evaluation) and in one process it times

  (a) this project's code: `PromptMLM` (at the mask only, the LM head's transform and then only the
      label words' rows of the vocabulary projection) on dynamically padded batches (`Collator()`),
      evaluation in length-grouped batches (longest first, as `DeltaTrainer`) under `torch.inference_mode`;
  (b) the same code in reference mode: batches padded to max_seq_length, full-vocabulary MLM scores
      at every position (`PromptMLM(reference_mode=True)`, `Collator(pad_to=max_seq_length)`);
  (c) a plain transformers `RobertaForMaskedLM` forward (forward+backward for training) on the
      batches of (a) (the soft-prompt ids -k replaced by token id 0).

Evaluation: (a) is timed on the whole test set; (a), (b), (c) and the evaluation speed items are
timed on every `--slow_eval_stride`-th of (a)'s length-grouped batches (the same examples, the same
eval batch size for all). Training: a step is what the HF Trainer does per step: forward, loss,
backward, grad-clip 1.0, AdamW over the trainable parameters (fused: the Trainer's default optimizer
with torch >= 2.8), linear schedule, zero_grad; one warm-up step, then the timed steps.

Compared runs are timed round-robin (round i: every run does its i-th batch or step, in a rotating
order), so changes in machine load during the benchmark hit all of them alike.

Peak memory: each configuration in its own process (forked from a server that imported this module
once): CUDA max allocated on GPU, peak RSS (VmHWM, reset once the model is built) on CPU, both
counted above the process's memory just before the model is built, i.e. weights + gradients +
optimizer state + activations.

Output: `metric<TAB>value` lines: settings, memory, raw speed figures, the speed items, then ratios.
"""
import argparse
import contextlib
import copy
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForMaskedLM, get_linear_schedule_with_warmup  # noqa: E402

from src.checks import ArgumentParser, at_least, between, typed  # noqa: E402
from src.dataset import Collator, FewShotDataset  # noqa: E402
from src.arguments import argument_defaults  # noqa: E402
from src.delta import (METHODS as DELTA_METHODS, attach_methods, set_trainable, split_combination,  # noqa: E402
                       trained_by)
from src.errors import UserError, cli  # noqa: E402
from src.models import PromptMLM  # noqa: E402
from src.packed import RunStacks, backward_together, packed_loss, share_frozen  # noqa: E402
from src.tasks import get_task  # noqa: E402
from src.templates import label_word_ids, parse_mapping  # noqa: E402
from src.random_models import MODEL_SIZES, roberta_tokenizer  # noqa: E402

# Each method of the paper alone, all of them together, and full fine-tuning.
PAPER_METHODS = [m.name for m in DELTA_METHODS.values() if m.in_paper]
METHODS = [*PAPER_METHODS, ",".join(PAPER_METHODS), "all"]
PROMPT_NUM = 10
MEMORY_STEPS = 2  # step 2's backward holds weights, optimizer state, gradients and activations at once
MEMORY_EVAL_BATCHES = 2  # the longest length-grouped batches come first
MEMORY_PROCESSES = 2  # memory children run side by side, one thread each; nothing is timed meanwhile
# imported once by the fork server that the memory children are forked from
PRELOAD = ["torch", "transformers", "adapters", "transformers.models.roberta.modeling_roberta",
           "adapters.models.roberta.modeling_roberta", "src.dataset", "src.models", "src.delta",
           "src.random_models"]


# -- setup --------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_size", default="small", choices=sorted(MODEL_SIZES))
    parser.add_argument("--task", default="SST-2")
    parser.add_argument("--data_dir", required=True, help="k-shot folder with the train and test files")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in every timed forward")
    parser.add_argument("--max_seq_length", type=typed(int, at_least(8)), default=None,
                        help="default: the task's own setting (SPEC §8), else 128 (run.py's default)")
    parser.add_argument("--train_batch_size", type=typed(int, at_least(1)), default=4,
                        help="the reference's 16-shot batch size")
    parser.add_argument("--eval_batch_size", type=typed(int, at_least(1)), default=8,
                        help="used by (a), (b) and (c) alike")
    parser.add_argument("--train_steps", type=typed(int, at_least(1)), default=8,
                        help="timed steps per method (after 1 warm-up)")
    parser.add_argument("--reference_train_steps", type=typed(int, at_least(1)), default=2,
                        help="timed steps per method in reference mode (all its padded batches cost the same)")
    parser.add_argument("--slow_eval_stride", type=typed(int, at_least(1)), default=8,
                        help="(b), (c) and the speed items are timed on every N-th length-grouped eval batch")
    parser.add_argument("--cache_dir", default=None, help="feature cache folder (default: a temporary one)")
    parser.add_argument("--threads", type=typed(int, at_least(0)), default=1,
                        help="torch intra-op threads of the timed runs; 0 = torch's default (all cores). One "
                             "thread keeps figures and ratios stable on a shared machine: with two threads "
                             "and other load, every op waits for a descheduled OpenMP thread")
    parser.add_argument("--skip_memory", action="store_true", help="no memory measurements")
    parser.add_argument("--packed_runs", type=typed(int, at_least(0)), default=0,
                        help="K > 0: also time K runs of --packed_methods (one grid's learning rates x seeds) "
                             "packed (src/packed.py) vs one after another, dropout off")
    parser.add_argument("--packed_only", action="store_true", help="only the --packed_runs comparison")
    parser.add_argument("--packed_methods", type=packable, default=",".join(PAPER_METHODS),
                        help="the combination the packed runs train (default: the paper's three together)")
    parser.add_argument("--seed", type=typed(int, between(0, 2**32 - 1, integer=True)), default=42)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    return args


def packable(spec):
    """--packed_methods: a combination of the registry's methods that can share the frozen base."""
    try:
        names = split_combination(spec, option="--packed_methods")
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if any(DELTA_METHODS[name].trains_base for name in names):
        raise argparse.ArgumentTypeError(f"{spec!r} trains the base model itself: its runs cannot be packed")
    return ",".join(names)


def task_settings(task):
    """The task's own run.py arguments (SPEC §8) that shape its features, as a dict."""
    extra, settings = list(task.extra_args), {}
    for i, name in enumerate(extra):
        if name in ("--max_seq_length", "--first_sent_limit", "--other_sent_limit"):
            settings[name[2:]] = int(extra[i + 1])
    return settings


def make_setup(args):
    """Tokenizer, config, features and every batch (on the device): everything but the models."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    task = get_task(args.task)
    if task.regression:
        raise SystemExit(f"error: {task.name} is a regression task; the benchmark times classification tasks")
    tokenizer = roberta_tokenizer()
    settings = task_settings(task)
    template = task.template("Y", prompt=True)
    if "prompt" not in template.split("*"):
        raise SystemExit(f"error: the {task.name} template has no *prompt* part: {template}")
    data_args = SimpleNamespace(
        task_name=task.name, data_dir=args.data_dir, template=template, mapping=task.mapping,
        few_shot_type="prompt", max_seq_length=args.max_seq_length or settings.get("max_seq_length", 128),
        first_sent_limit=settings.get("first_sent_limit"), other_sent_limit=settings.get("other_sent_limit"),
        prompt_num=PROMPT_NUM, overwrite_cache=False)
    sizes = MODEL_SIZES[args.model_size]
    setup = SimpleNamespace(
        args=args, task=task, tokenizer=tokenizer, data_args=data_args, device=torch.device(args.device),
        config=AutoConfig.for_model("roberta", **{**sizes, "vocab_size": max(sizes["vocab_size"], len(tokenizer))}),
        label_words=label_word_ids(tokenizer, parse_mapping(task.mapping, task.labels), task.labels),
        train_set=FewShotDataset(data_args, tokenizer, "train", cache_dir=args.cache_dir),
        test_set=FewShotDataset(data_args, tokenizer, "test", cache_dir=args.cache_dir))
    dynamic = Collator(tokenizer.pad_token_id)
    padded = Collator(tokenizer.pad_token_id, pad_to=data_args.max_seq_length)

    def batches(collator, dataset, groups):
        return [{name: t.to(setup.device) for name, t in collator([dataset[i] for i in g]).items()} for g in groups]

    # training: the Trainer's shuffled order (seeded), batch after batch, one warm-up step first
    order = np.random.default_rng(args.seed).permutation(len(setup.train_set))
    groups = [order[i:i + args.train_batch_size] for i in range(0, len(order), args.train_batch_size)]
    groups = [groups[i % len(groups)] for i in range(args.train_steps + 1)]
    setup.train_batches = batches(dynamic, setup.train_set, groups)
    setup.train_batches_padded = batches(padded, setup.train_set, groups[:args.reference_train_steps + 1])
    # evaluation: the whole test set length-grouped; the slow subset in three layouts
    setup.eval_groups = eval_groups(setup.test_set, args.eval_batch_size)
    setup.eval_batches = batches(dynamic, setup.test_set, setup.eval_groups)
    setup.slow_ids = list(range(0, len(setup.eval_groups), args.slow_eval_stride))
    subset_groups = [setup.eval_groups[b] for b in setup.slow_ids]
    setup.subset_batches = [setup.eval_batches[b] for b in setup.slow_ids]
    setup.subset_batches_padded = batches(padded, setup.test_set, subset_groups)
    in_file_order = np.sort(np.concatenate(subset_groups))
    setup.subset_batches_dataset_order = batches(dynamic, setup.test_set, [
        in_file_order[i:i + args.eval_batch_size] for i in range(0, len(in_file_order), args.eval_batch_size)])
    return setup


def eval_groups(dataset, batch_size):
    """Example indices of each evaluation batch, the examples sorted by length (longest first)."""
    lengths = np.array([len(item["input_ids"]) for item in dataset])
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def build_model(setup, methods="prompt", attn_implementation="sdpa", config=None, delta_seed=None):
    """PromptMLM over a randomly initialised RoBERTa (same seed: same weights) with the soft prompt
    and the modules of `methods` attached, on the device; with `delta_seed`, the attached modules
    are initialised from that seed instead."""
    torch.manual_seed(setup.args.seed)
    mlm = AutoModelForMaskedLM.from_config(config or setup.config, attn_implementation=attn_implementation)
    if delta_seed is not None:
        torch.manual_seed(delta_seed)
    model = PromptMLM(mlm, setup.label_words)
    options = SimpleNamespace(**{**argument_defaults(), "prompt_num": PROMPT_NUM})
    attach_methods(model, {"prompt", *split_combination(methods)}, options)
    return model.to(setup.device)


def sync(setup):
    if setup.device.type == "cuda":
        torch.cuda.synchronize()


def autocast(setup):
    return torch.autocast(device_type=setup.device.type, dtype=torch.bfloat16, enabled=setup.args.bf16)


@contextlib.contextmanager
def reference_mode(model, enabled=True):
    model.reference_mode = enabled
    try:
        yield model
    finally:
        model.reference_mode = False


def round_robin(setup, runs):
    """Time `runs` (name -> (units, do(i))) interleaved: in round i each run does its unit i, the order
    rotating per round. Unit 0 is a warm-up. Returns name -> seconds of units 1, 2, ..."""
    names, seconds = list(runs), dict.fromkeys(runs, 0.0)
    for i in range(max(units for units, _ in runs.values())):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            units, do = runs[name]
            if i < units:
                sync(setup)
                start = time.perf_counter()
                do(i)
                sync(setup)
                if i:
                    seconds[name] += time.perf_counter() - start
    return seconds


# -- forwards: each returns the (batch, classes) label-word logits in fp32 ------------------------

def eval_inputs(batch):
    return {name: batch[name] for name in ("input_ids", "attention_mask", "mask_pos")}


def prompt_mlm_logits(model, batch):
    """(a): the project's PromptMLM forward (reference_mode off)."""
    return model(**eval_inputs(batch))["logits"]


def reference_logits(model, batch):
    """(b): the same PromptMLM in reference mode (full-vocabulary scores at every position)."""
    with reference_mode(model):
        return model(**eval_inputs(batch))["logits"]


def plain_hf_logits(model, batch):
    """(c): plain `RobertaForMaskedLM` forward (vocabulary scores at every position), then gather."""
    scores = model.mlm(input_ids=batch["input_ids"].clamp(min=0), attention_mask=batch["attention_mask"]).logits
    rows = torch.arange(scores.size(0), device=scores.device)
    return scores[rows, batch["mask_pos"]][:, model.label_word_ids].float()


def full_vocab_head_logits(model, batch):
    """Comparison item (the previous fast path): the whole LM head, full vocabulary, at the mask
    position only, then the label words' columns; what `PromptMLM.label_word_scores` saves."""
    embeddings = model.soft_prompt(batch["input_ids"], model.mlm.get_input_embeddings())
    hidden = model.mlm.base_model(inputs_embeds=embeddings, attention_mask=batch["attention_mask"])[0]
    rows = torch.arange(hidden.size(0), device=hidden.device)
    return model.mlm.lm_head(hidden[rows, batch["mask_pos"]])[:, model.label_word_ids].float()


# -- evaluation ---------------------------------------------------------------------------------

def eval_run(setup, model, batches, logits_fn, grad_mode=torch.inference_mode, keep=None):
    """(units, do) for round_robin: a warm-up on the first batch, then each batch; logits into `keep`."""
    model.eval()

    def do(i):
        with grad_mode(), autocast(setup):
            logits = logits_fn(model, batches[max(i - 1, 0)]).float().cpu()
        if i and keep is not None:
            keep.append(logits)
    return len(batches) + 1, do


def examples_per_s(batches, seconds):
    return sum(len(b["input_ids"]) for b in batches) / seconds


def measure_eval(setup, results):
    """(a) on the whole test set; then (a), (b), (c) and the speed items on the same subset, round-robin."""
    model = build_model(setup)
    eager = build_model(setup, attn_implementation="eager")
    seconds = round_robin(setup, {"fast": eval_run(setup, model, setup.eval_batches, prompt_mlm_logits)})
    results["eval_examples_per_s_fast_whole_test_set"] = examples_per_s(setup.eval_batches, seconds["fast"])

    fp32 = not setup.args.bf16
    logits = {name: [] for name in ("fast", "reference", "full_vocab_head", "eager_attention")}
    subset, in_file_order = setup.subset_batches, setup.subset_batches_dataset_order
    runs = {  # each speed item differs from "fast" in one respect
        "fast": eval_run(setup, model, subset, prompt_mlm_logits, keep=logits["fast"]),
        "reference": eval_run(setup, model, setup.subset_batches_padded, reference_logits, keep=logits["reference"]),
        "plain_hf": eval_run(setup, model, subset, plain_hf_logits),
        "fast_dataset_order": eval_run(setup, model, in_file_order, prompt_mlm_logits),
        # also what DeltaTrainer does (HF prediction loop): length-sorted batches under no_grad
        "fast_no_grad": eval_run(setup, model, subset, prompt_mlm_logits, torch.no_grad),
        "fast_full_vocab_head": eval_run(setup, model, subset, full_vocab_head_logits,
                                         keep=logits["full_vocab_head"]),
        "fast_eager_attention": eval_run(setup, eager, subset, prompt_mlm_logits, keep=logits["eager_attention"]),
    }
    seconds = round_robin(setup, runs)
    for name, total in seconds.items():
        batches = setup.subset_batches_padded if name == "reference" else subset
        results[f"eval_examples_per_s_{name}"] = examples_per_s(batches, total)

    if not fp32:  # the equivalence check is an fp32 one: recompute without autocast
        setup = SimpleNamespace(**{**vars(setup), "args": SimpleNamespace(**{**vars(setup.args), "bf16": False})})
        bf16_logits, logits = torch.cat(logits["fast"]), {name: [] for name in logits}
        round_robin(setup, {
            "fast": eval_run(setup, model, subset, prompt_mlm_logits, keep=logits["fast"]),
            "reference": eval_run(setup, model, setup.subset_batches_padded, reference_logits,
                                  keep=logits["reference"]),
            "full_vocab_head": eval_run(setup, model, subset, full_vocab_head_logits,
                                        keep=logits["full_vocab_head"]),
            "eager_attention": eval_run(setup, eager, subset, prompt_mlm_logits, keep=logits["eager_attention"])})
    if not fp32:
        results["max_abs_logit_diff_bf16_vs_fp32"] = (bf16_logits - torch.cat(logits["fast"])).abs().max().item()
    reference = torch.cat(logits["reference"])
    results["max_abs_logit_diff_fast_vs_reference"] = (torch.cat(logits["fast"]) - reference).abs().max().item()
    for name in ("full_vocab_head", "eager_attention"):
        results[f"max_abs_logit_diff_{name}_vs_reference"] = (torch.cat(logits[name]) - reference).abs().max().item()


# -- training -----------------------------------------------------------------------------------

def make_optimizer(params, implementation="fused"):
    """torch AdamW as the HF Trainer builds it: 'adamw_torch_fused' (its default with torch >= 2.8) or
    'adamw_torch' (the for-loop implementation on CPU tensors)."""
    flags = {"fused": {"fused": True}, "for-loop": {"foreach": False}}[implementation]
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, **flags)


def trainer_step(setup, model, batch, optimizer, scheduler, clipped):
    """One HF Trainer step: forward, loss, backward, grad-clip 1.0, AdamW, schedule, zero_grad."""
    with autocast(setup):
        loss = model(**batch)["loss"]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(clipped, 1.0)
    optimizer.step()
    scheduler.step()
    model.zero_grad(set_to_none=True)
    return loss.detach()


def step_with_former_syncs(setup, model, batch, optimizer, scheduler, clipped):
    """The Trainer step as it was before the lean step: the same work plus the host-device syncs it
    had (SoftPrompt's `(input_ids < 0).any()`, transformers' `torch.all(mask == 1)` on a 2-D
    attention mask, the Trainer's per-step `isnan(loss) or isinf(loss)` (logging_nan_inf_filter))."""
    bool((batch["input_ids"] < 0).any())
    bool(torch.all(batch["attention_mask"] == 1))
    loss = trainer_step(setup, model, batch, optimizer, scheduler, clipped)
    return bool(torch.isnan(loss) or torch.isinf(loss))


def train_run(setup, model, methods, batches, reference=False, optimizer_impl="fused", grads_for_frozen=False):
    """(units, do) for round_robin: one Trainer step per batch with a fresh optimizer over `methods`.

    grads_for_frozen: the naive alternative to freezing (every parameter keeps requires_grad, the
    optimizer only holds the trained ones)."""
    model.train()
    set_trainable(model, methods.split(","))
    params = [p for p in model.parameters() if p.requires_grad]
    if grads_for_frozen:
        for p in model.parameters():
            p.requires_grad_(True)
    optimizer = make_optimizer(params, optimizer_impl)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, len(batches))

    def do(i):
        with reference_mode(model, reference):
            trainer_step(setup, model, batches[i], optimizer, scheduler, params)
    return len(batches), do


def plain_hf_train_run(setup, model, batches):
    """(units, do) for (c): plain RobertaForMaskedLM forward + backward with its own MLM loss (the label
    word at the mask), every parameter trained; no optimizer."""
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)

    def do(i):
        batch = batches[i]
        labels = torch.full_like(batch["input_ids"], -100)
        rows = torch.arange(labels.size(0), device=labels.device)
        labels[rows, batch["mask_pos"]] = model.label_word_ids[batch["labels"]]
        with autocast(setup):
            loss = model.mlm(input_ids=batch["input_ids"].clamp(min=0), attention_mask=batch["attention_mask"],
                             labels=labels).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
    return len(batches), do


def measure_training(setup, results):
    """Steps/s per method for (a) and (b), forward+backward/s for (c) and the training speed items,
    all round-robin. (a) and (b) of a method share its model (fresh optimizer each)."""
    runs, fast, padded = {}, setup.train_batches, setup.train_batches_padded
    for methods in METHODS:
        model = build_model(setup, methods)
        runs[methods] = train_run(setup, model, methods, fast)
        runs[f"reference_{methods}"] = train_run(setup, model, methods, padded, reference=True)
        if methods == "all":
            runs["all_adamw_for-loop"] = train_run(setup, model, methods, fast, optimizer_impl="for-loop")
    everything_requires_grad = build_model(setup)
    runs["bias_grads_for_frozen"] = train_run(setup, everything_requires_grad, "bias", fast, grads_for_frozen=True)
    runs["plain_hf_fwd_bwd"] = plain_hf_train_run(setup, everything_requires_grad, fast[:len(padded)])
    seconds = round_robin(setup, runs)
    for name, total in seconds.items():
        results[f"train_steps_per_s_{name}"] = (runs[name][0] - 1) / total


def measure_tokenisation(setup, results):
    """Building the test features from the data file vs loading them from the feature cache."""
    with tempfile.TemporaryDirectory(dir=setup.args.cache_dir) as cache:
        start = time.perf_counter()
        FewShotDataset(setup.data_args, setup.tokenizer, "test", cache_dir=cache)
        results["features_build_s_uncached"] = time.perf_counter() - start
        start = time.perf_counter()
        FewShotDataset(setup.data_args, setup.tokenizer, "test", cache_dir=cache)
        results["features_load_s_cached"] = time.perf_counter() - start


# -- packed runs (the sweep view) ---------------------------------------------------------------

PACKED_GRID = [(lr, seed) for lr in (1e-3, 3e-4, 1e-4, 3e-5) for seed in (13, 21, 42, 87, 100)]  # SPEC §7


def run_batches(setup, seed, pad_to_multiple_of=None):
    """One run's training batches: its own seeded order over the train split, epoch after epoch."""
    rng, order = np.random.default_rng(seed), []
    while len(order) < (setup.args.train_steps + 1) * setup.args.train_batch_size:
        order.extend(rng.permutation(len(setup.train_set)))
    size = setup.args.train_batch_size
    collator = Collator(setup.tokenizer.pad_token_id, pad_to_multiple_of=pad_to_multiple_of)
    return [{name: t.to(setup.device) for name, t in collator([setup.train_set[i] for i in order[j:j + size]]).items()}
            for j in range(0, (setup.args.train_steps + 1) * size, size)]


def runs_for_packing(setup, pad_to_multiple_of=None, count=None, packed=False):
    """`count` (default K) models (same base, one copy in memory; each run's delta seeded by its seed)
    with optimizers at the runs' learning rates. Returns (runs, their RunStacks if `packed` else None)."""
    config = copy.deepcopy(setup.config)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    grid = PACKED_GRID[:count or setup.args.packed_runs]
    methods = setup.args.packed_methods
    models = [build_model(setup, methods, config=config, delta_seed=seed) for _, seed in grid]
    for model in models:
        model.train()
        set_trainable(model, methods.split(","))
    # one copy of the frozen base in memory (K roberta-large copies would not fit a GPU); it changes
    # nothing in how each model computes
    per_run = share_frozen(models, trained_by(methods.split(",")))
    stacks = RunStacks(models, per_run) if packed else None
    runs = []
    for model, (lr, seed) in zip(models, grid):
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(params)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = lr
        scheduler = get_linear_schedule_with_warmup(optimizer, 0, setup.args.train_steps + 1)
        runs.append(SimpleNamespace(model=model, params=params, optimizer=optimizer, scheduler=scheduler,
                                    batches=run_batches(setup, seed, pad_to_multiple_of)))
    return runs, stacks


def measure_packed(setup, results):
    """K runs packed (one vmapped forward/backward over the shared base, then each run's clip, AdamW,
    schedule, zero_grad) vs the same K runs one after another (the Trainer step), round-robin: one
    unit = one step of every run. Then the largest difference of any delta value after the same steps."""
    sequential, (packed, stacks) = runs_for_packing(setup)[0], runs_for_packing(setup, packed=True)
    pad_token_id = setup.tokenizer.pad_token_id

    def one_by_one(i):
        for run in sequential:
            trainer_step(setup, run.model, run.batches[i], run.optimizer, run.scheduler, run.params)

    batched_loss = packed_loss(packed[0].model)

    def together(i):
        backward_together(batched_loss, stacks, [run.batches[i] for run in packed], pad_token_id, setup.args.bf16)
        for run in packed:
            torch.nn.utils.clip_grad_norm_(run.params, 1.0)
            run.optimizer.step()
            run.scheduler.step()
            run.model.zero_grad(set_to_none=True)  # as each run's Trainer does

    units = setup.args.train_steps + 1
    lean, former = (runs_for_packing(setup, count=1)[0][0] for _ in range(2))

    def former_step(i):
        step_with_former_syncs(setup, former.model, former.batches[i], former.optimizer, former.scheduler,
                               former.params)

    def lean_step(i):
        trainer_step(setup, lean.model, lean.batches[i], lean.optimizer, lean.scheduler, lean.params)
    seconds = round_robin(setup, {"sequential": (units, one_by_one), "packed": (units, together),
                                  "former_step": (units, former_step), "lean_step": (units, lean_step)})
    results["lean_step_speedup_vs_former"] = seconds["former_step"] / seconds["lean_step"]
    k = len(packed)
    results["packed_runs"] = k
    results["packed_steps_per_run"] = units
    for name in ("sequential", "packed"):
        results[f"packed_optimizer_steps_per_s_{name}"] = k * (units - 1) / seconds[name]
    results["packed_speedup_vs_sequential"] = seconds["sequential"] / seconds["packed"]
    if setup.device.type == "cpu":
        results["sequential_step_matmul_share"] = matmul_share(lambda: lean_step(units - 1))  # after its timing
    differences = max_abs_diffs(sequential, packed)
    results["packed_max_abs_diff_vs_sequential"] = max(differences.values())
    results["packed_max_abs_diff_vs_sequential_except_key_bias"] = max(
        difference for name, difference in differences.items() if not name.endswith(KEY_BIAS))
    # float-noise yardstick: the same sequential runs, each batch padded to a multiple of 16 (no
    # other change; padding is what packing adds too), after the same steps
    padded = runs_for_packing(setup, pad_to_multiple_of=16)[0]
    for i in range(units):
        for run in padded:
            trainer_step(setup, run.model, run.batches[i], run.optimizer, run.scheduler, run.params)
    results["sequential_padded_max_abs_diff_vs_sequential"] = max(max_abs_diffs(sequential, padded).values())


# The attention key bias adds q.b to every score of a query: softmax ignores it, so its gradient is
# zero up to float noise, which Adam (|step| ~ lr where |gradient| >> eps) turns into steps. Its
# value differs between any two float orders of the same runs and changes no output.
KEY_BIAS = ".attention.self.key.bias"


def max_abs_diffs(runs, other_runs):
    """Per trained parameter name, the largest difference between two sets of the same runs."""
    differences = {}
    for one, other in zip(runs, other_runs):
        names = [name for name, param in one.model.named_parameters() if param.requires_grad]
        for name, a, b in zip(names, one.params, other.params):
            differences[name] = max(differences.get(name, 0.0), (a - b).abs().max().item())
    return differences


def matmul_share(step):
    """The share of `step`'s CPU time spent in matrix products (profiled once): a bound on what
    packing can gain on CPU, where it shares weights but not floating-point work."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step()
    events = profile.key_averages()
    matmul = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    return matmul / sum(e.self_cpu_time_total for e in events)


# -- memory (one process per configuration) -----------------------------------------------------

MEMORY_CONFIGS = ([("train", "fast", m) for m in METHODS] + [("train", "reference", m) for m in METHODS]
                  + [("train", "plain_hf", "all"), ("eval", "fast", None), ("eval", "reference", None),
                     ("eval", "plain_hf", None)])


def memory_name(phase, mode, methods):
    if phase == "eval":
        return f"peak_memory_mb_eval_{mode}"
    if mode == "plain_hf":
        return "peak_memory_mb_plain_hf_train"
    return f"peak_memory_mb_{'' if mode == 'fast' else 'reference_'}{methods}"


def _proc_status_bytes(field):
    return 1024 * int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def memory_in_use(setup):
    return torch.cuda.memory_allocated() if setup.device.type == "cuda" else _proc_status_bytes("VmRSS")


def reset_peak(setup):
    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS


def peak(setup):
    return torch.cuda.max_memory_allocated() if setup.device.type == "cuda" else _proc_status_bytes("VmHWM")


def memory_child(args, phase, mode, methods):
    """In its own process: the peak memory of one configuration above the pre-model baseline, bytes."""
    setup = make_setup(args)
    torch.set_num_threads(1)
    baseline = memory_in_use(setup)
    model = build_model(setup, methods or "prompt")
    reset_peak(setup)
    if phase == "eval":
        forward = {"fast": prompt_mlm_logits, "reference": reference_logits, "plain_hf": plain_hf_logits}[mode]
        batches = setup.subset_batches_padded if mode == "reference" else setup.eval_batches
        units, do = eval_run(setup, model, batches[:MEMORY_EVAL_BATCHES], forward)
    elif mode == "plain_hf":
        units, do = plain_hf_train_run(setup, model, setup.train_batches[:MEMORY_STEPS])
    else:
        batches = setup.train_batches_padded if mode == "reference" else setup.train_batches
        units, do = train_run(setup, model, methods, batches[:MEMORY_STEPS], reference=mode == "reference")
    for i in range(units):
        do(i)
    sync(setup)
    return peak(setup) - baseline


def measure_memory(setup, results):
    """Each configuration in a new process, forked from a server that imported the libraries once."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    with context.Pool(processes=MEMORY_PROCESSES, maxtasksperchild=1) as pool:
        peaks = pool.starmap(memory_child, [(setup.args, *config) for config in MEMORY_CONFIGS], chunksize=1)
    for config, peak_bytes in zip(MEMORY_CONFIGS, peaks):
        results[memory_name(*config)] = peak_bytes / 2 ** 20


# -- main ---------------------------------------------------------------------------------------

def describe(setup, results):
    args, config = setup.args, setup.config
    results.update({
        "device": torch.cuda.get_device_name() if setup.device.type == "cuda" else "cpu",
        "torch_version": torch.__version__, "threads": torch.get_num_threads(), "bf16": args.bf16,
        "model_size": args.model_size, "hidden_size": config.hidden_size, "layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size, "task": setup.task.name, "max_seq_length": setup.data_args.max_seq_length,
        "train_batch_size": args.train_batch_size, "eval_batch_size": args.eval_batch_size,
        "test_examples": len(setup.test_set), "subset_examples": sum(len(b["input_ids"]) for b in setup.subset_batches),
        "memory_measure": "cuda_max_allocated" if setup.device.type == "cuda" else "peak_rss_above_baseline",
    })


def add_ratios(results):
    r = results
    r["eval_speedup_vs_max_length_padding"] = r["eval_examples_per_s_fast"] / r["eval_examples_per_s_reference"]
    r["eval_throughput_ratio_vs_plain_hf"] = r["eval_examples_per_s_fast"] / r["eval_examples_per_s_plain_hf"]
    for item in ("dataset_order", "no_grad", "full_vocab_head", "eager_attention"):
        r[f"eval_speedup_fast_vs_{item}"] = r["eval_examples_per_s_fast"] / r[f"eval_examples_per_s_fast_{item}"]
    r["train_speedup_prompt_vs_all"] = r["train_steps_per_s_prompt"] / r["train_steps_per_s_all"]
    r["train_speedup_bias_vs_all"] = r["train_steps_per_s_bias"] / r["train_steps_per_s_all"]
    for methods in METHODS:
        r[f"train_speedup_{methods}_vs_reference"] = (r[f"train_steps_per_s_{methods}"]
                                                      / r[f"train_steps_per_s_reference_{methods}"])
    r["train_speedup_bias_vs_bias_grads_for_frozen"] = (r["train_steps_per_s_bias"]
                                                        / r["train_steps_per_s_bias_grads_for_frozen"])
    r["train_speedup_all_fused_vs_for-loop_adamw"] = (r["train_steps_per_s_all"]
                                                      / r["train_steps_per_s_all_adamw_for-loop"])
    if "peak_memory_mb_all" in r:
        r["peak_memory_ratio_adapter_vs_all"] = r["peak_memory_mb_adapter"] / r["peak_memory_mb_all"]


@cli
def main(argv=None):
    args = parse_args(argv)
    temporary = None
    if args.cache_dir is None:
        args.cache_dir = temporary = tempfile.mkdtemp(prefix="benchmark-features-")
    try:
        started = time.perf_counter()
        setup = make_setup(args)
        results = {}
        describe(setup, results)
        phases = [measure_tokenisation, measure_eval, measure_training]
        if not args.skip_memory:
            phases.insert(0, measure_memory)
        if args.packed_runs:
            phases = [measure_packed] if args.packed_only else phases + [measure_packed]
        for phase in phases:
            phase_started = time.perf_counter()
            phase(setup, results)
            print(f"# {phase.__name__}: {time.perf_counter() - phase_started:.1f} s", file=sys.stderr)
        if not args.packed_only:
            add_ratios(results)
        results["benchmark_wall_s"] = time.perf_counter() - started
        for name, value in results.items():
            print(f"{name}\t{value:.6g}" if isinstance(value, float) else f"{name}\t{value}")
        return 0
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
