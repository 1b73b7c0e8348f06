"""Packed runs (src/packed.py): K runs trained together equal the same K runs one by one.

Tiny models with dropout off, the real k-shot SST-2 splits of seeds 13 and 42 (different lengths),
run.py's `main` in process. Compared: the training loss at every step, the dev history, the final
deltas (within 1e-5) and the log records (timing fields aside).
"""
import ast
import json
import os
import re
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional

import src.fold
import src.packed
from run import main
from src.delta import set_trainable, trained_by
from src.fold import RealTokens
from src.models import build_model
from src.multirun import expand_argv
from src.packed import FoldedTrainer, PackedTrainer
from src.tasks import get_task
from src.trainer import DeltaTrainer

COMBINATIONS = ["prompt", "bias", "adapter", "prompt,adapter", "bias,adapter", "prompt,bias", "prompt,bias,adapter"]
# Every combination on RoBERTa and BERT; on the newer families the one with every method's modules
# (tests/test_delta_training.py trains each combination on every family); prefix tuning on three families.
FAMILY_COMBINATIONS = ([(family, combination) for family in ("roberta", "bert") for combination in COMBINATIONS]
                       + [(family, "prompt,bias,adapter") for family in ("deberta-v2", "modernbert")]
                       # prefix tuning: its pool of prefixes, which every layer holds, under vmap
                       + [("roberta", "prefix"), ("bert", "prompt,prefix"), ("deberta-v2", "bias,prefix")])
TIMING = {"wall_time", "time", "logging_dir"}  # logging_dir: HF's default holds the start time
TOLERANCE = 1e-5


def command(model, data_root, combination, seeds, learning_rates, max_steps=4, epochs=None):
    """A short run.py command line: `max_steps` steps evaluated every 2, or `epochs` epochs evaluated
    at each one's end; output_dir, log_file and the feature cache are relative (each test runs in a
    folder of its own)."""
    schedule = (["--max_steps", str(max_steps), "--eval_steps", "2", "--eval_strategy", "steps"] if epochs is None
                else ["--max_steps", "-1", "--num_train_epochs", str(epochs), "--eval_strategy", "epoch"])
    argv = ["--task_name", "SST-2", "--data_dir", str(data_root / "k-shot/SST-2/16-{seed}"),
            "--model_name_or_path", model, "--template", "*cls*prompt*sent_0*_It_was*mask*.*sep+*",
            "--mapping", "{'0':'terrible','1':'great'}", "--training_params", combination, "--do_train", *schedule,
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "128", "--max_seq_length", "64",
            "--learning_rate", *learning_rates, "--seed", *seeds, "--output_dir", "out/lr{learning_rate}-seed{seed}",
            "--log_file", "log", "--feature_cache_dir", "cache", "--disable_tqdm", "true",
            # Adam's step is about lr * sign(gradient) wherever |gradient| >> epsilon: at the default 1e-8,
            # float noise flips the sign of near-zero gradients (tiny random models have many) and moves
            # such a value by ~lr. A larger epsilon keeps those steps small in both runs alike, so the
            # comparison measures the computation, not Adam's amplification of its noise.
            "--adam_epsilon", "1e-6"]
    return argv


def records(folder):
    return [json.loads(line) for line in (folder / "log").read_text().splitlines()]


def assert_close(a, b, where="record"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, abs=TOLERANCE), where
    else:
        assert a == b, where


def without_timing(record, ignore=frozenset()):
    return {key: value for key, value in record.items() if key not in TIMING | set(ignore)}


@pytest.fixture
def step_losses(monkeypatch):
    """Per-run training losses at every step: {"single": {run: [...]}, "packed": {run: [...]}}, a run
    named by its (learning rate, seed)."""
    seen = {"single": {}, "packed": {}}

    def recording(kind, training_step):
        def step(self, *args, **kwargs):
            loss = training_step(self, *args, **kwargs)
            seen[kind].setdefault((self.args.learning_rate, self.args.seed), []).append(loss.item())
            return loss
        return step
    def folded(training_step):
        def step(self, *args, **kwargs):
            before = self.losses.clone()  # each run's losses since its last log
            loss = training_step(self, *args, **kwargs)
            for trainer, value in zip(self.runs, (self.losses - before).tolist()):
                seen["packed"].setdefault((trainer.args.learning_rate, trainer.args.seed), []).append(value)
            return loss
        return step
    monkeypatch.setattr(DeltaTrainer, "training_step", recording("single", DeltaTrainer.training_step))
    monkeypatch.setattr(PackedTrainer, "training_step", recording("packed", PackedTrainer.training_step))
    monkeypatch.setattr(FoldedTrainer, "training_step", folded(FoldedTrainer.training_step))
    return seen


def run_in(folder, argv, monkeypatch):
    folder.mkdir()
    monkeypatch.chdir(folder)
    return main(argv)


def assert_runs_equal(packed, single, ignore=frozenset()):
    """The runs logged in folder `packed` equal those in `single`: records (but timing and `ignore`
    fields) and saved deltas within TOLERANCE."""
    assert records(packed) and len(records(packed)) == len(records(single))
    for record_p, record_s in zip(records(packed), records(single)):
        assert_close(without_timing(record_p, ignore), without_timing(record_s, ignore))
        delta_p = load_file(packed / record_p["output_dir"] / "delta.safetensors")
        delta_s = load_file(single / record_s["output_dir"] / "delta.safetensors")
        assert set(delta_p) == set(delta_s) and delta_p
        for name in delta_p:
            assert torch.allclose(delta_p[name], delta_s[name], atol=TOLERANCE, rtol=0), name


def run_singles(folder, model, data_root, combination, seeds, learning_rates, monkeypatch, extra=()):
    """The runs of a pack one by one (same relative paths, another folder); their exit statuses."""
    folder.mkdir()
    monkeypatch.chdir(folder)
    return [main(command(model, data_root, combination, [seed], [learning_rate]) + list(extra))
            for learning_rate in learning_rates for seed in seeds]


def folds(family, combination):
    """Whether a pack of this family and combination folds (src/fold.py), else it is vmapped."""
    return family in ("roberta", "bert") and "prefix" not in combination


@pytest.mark.parametrize("family, combination", FAMILY_COMBINATIONS)
def test_packed_runs_equal_single_runs(family, combination, tiny_of, data_root, tmp_path, monkeypatch, step_losses,
                                       capsys):
    # seeds 13 and 42: other data splits (of other lengths), other initial deltas; all three
    # methods at once also with two learning rates (4 runs). Adam turns gradient float noise
    # (~1e-9, from padding to the pack's common length and batched kernels) into parameter
    # differences proportional to the learning rate where a gradient is near zero (tiny random
    # models have ~100 such elements): up to 2e-5 at 1e-3 after 4 steps (BERT, bias,adapter).
    seeds = ["13", "42"]
    learning_rates = ["3e-4", "1e-4"] if combination == "prompt,bias,adapter" else ["3e-4"]
    runs = len(seeds) * len(learning_rates)
    no_dropout_model = tiny_of(family, no_dropout=True)
    argv = command(no_dropout_model, data_root, combination, seeds, learning_rates)
    assert run_in(tmp_path / "packed", argv, monkeypatch) == 0
    assert ("packed through vmap" not in capsys.readouterr().err) == folds(family, combination)
    assert run_singles(tmp_path / "single", no_dropout_model, data_root, combination, seeds, learning_rates,
                       monkeypatch) == [0] * runs
    assert_runs_equal(tmp_path / "packed", tmp_path / "single")
    assert step_losses["packed"].keys() == step_losses["single"].keys() and len(step_losses["packed"]) == runs
    for run, packed in step_losses["packed"].items():
        assert len(packed) == 4
        assert packed == pytest.approx(step_losses["single"][run], abs=TOLERANCE)


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_packed_runs_multiplying_only_real_tokens_equal_single_runs(family, tiny_of, data_root, tmp_path, monkeypatch):
    """With the width floor at 0, every shared linear layer of the tiny models multiplies only the real
    tokens of the pack's batches (padded to the longest of both runs'): the same runs."""
    monkeypatch.setattr(src.fold, "UNPADDED_MIN_WIDTH", 0)
    padding = []
    linear = RealTokens.linear

    def counting(self, x, weight, bias):
        if self.index is not None and x.shape[:-1] == self.shape:
            padding.append(self.shape.numel() - self.index.numel())
        return linear(self, x, weight, bias)

    monkeypatch.setattr(RealTokens, "linear", counting)
    model = tiny_of(family, no_dropout=True)
    argv = command(model, data_root, "prompt,bias,adapter", ["13", "42"], ["3e-4"])
    assert run_in(tmp_path / "packed", argv, monkeypatch) == 0
    assert padding and min(padding) > 0
    assert run_singles(tmp_path / "single", model, data_root, "prompt,bias,adapter", ["13", "42"], ["3e-4"],
                       monkeypatch) == [0, 0]
    assert_runs_equal(tmp_path / "packed", tmp_path / "single")


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16 autocast"])
def test_real_tokens_linear_equals_the_padded_product_at_real_tokens(autocast):
    """The unpadded product gives the padded one's values (and dtype, under autocast too) at the real
    tokens and zeros at the padding; gradients reach only the real tokens."""
    tokens, mask = RealTokens(), torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    x = torch.randn(2, 4, 128, requires_grad=True)
    weight, bias = torch.randn(256, 128), torch.randn(256)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        padded = functional.linear(x, weight, bias)
        with tokens.of(mask):
            unpadded = tokens.linear(x, weight, bias)
    assert unpadded.dtype == padded.dtype and unpadded.shape == padded.shape
    real = mask.bool()
    assert torch.equal(unpadded[real], padded[real]) and not unpadded[~real].any()
    unpadded.float().sum().backward()
    assert x.grad[real].abs().sum(-1).all() and not x.grad[~real].any()
    assert tokens.index is None  # forgotten after the forward: a later batch of the same shape is not misread


def test_packed_runs_without_clipping_equal_single_runs(no_dropout_roberta, data_root, tmp_path, monkeypatch):
    """--max_grad_norm 0 turns clipping off (as in Trainer.train), it does not zero the gradients."""
    argv = command(no_dropout_roberta, data_root, "bias,adapter", ["13", "42"], ["3e-4"]) + ["--max_grad_norm", "0"]
    assert run_in(tmp_path / "packed", argv, monkeypatch) == 0
    (tmp_path / "single").mkdir()
    monkeypatch.chdir(tmp_path / "single")
    for seed in ("13", "42"):
        single = command(no_dropout_roberta, data_root, "bias,adapter", [seed], ["3e-4"]) + ["--max_grad_norm", "0"]
        assert main(single) == 0
    assert_runs_equal(tmp_path / "packed", tmp_path / "single")


def test_runs_grouped_by_length_score_in_order_and_pack_as_single_runs(no_dropout_roberta, data_root, tmp_path,
                                                                         monkeypatch):
    """--group_by_length: the training batches group similar lengths, drawn from the run's own seed (a pack's
    second run once drew after the first from torch's global generator: another order than alone), and the
    evaluation keeps the order `score` gives (the Trainer's shuffled length groups once paired predictions
    with other examples' labels: scores that a reload of the same delta did not reproduce)."""
    lr = ["3e-2"]  # a large step: predictions that differ by example
    argv = command(no_dropout_roberta, data_root, "bias,adapter", ["13", "42"], lr) + ["--group_by_length"]
    assert run_in(tmp_path / "packed", argv, monkeypatch) == 0
    (tmp_path / "single").mkdir()
    monkeypatch.chdir(tmp_path / "single")
    for seed in ("13", "42"):
        assert main(command(no_dropout_roberta, data_root, "bias,adapter", [seed], lr) + ["--group_by_length"]) == 0
    assert_runs_equal(tmp_path / "packed", tmp_path / "single")
    (record, _) = records(tmp_path / "single")
    rescore = command(no_dropout_roberta, data_root, "bias,adapter", ["13"], lr)
    rescore = [arg for arg in rescore if arg != "--do_train"] + ["--delta_path", record["output_dir"],
                                                                 "--tag", "rescore"]
    assert main(rescore) == 0
    rescored = records(tmp_path / "single")[-1]
    assert [rescored[key] for key in ("sst-2_dev_eval_acc", "sst-2_test_eval_acc")] == \
        [record[key] for key in ("sst-2_dev_eval_acc", "sst-2_test_eval_acc")]


@pytest.mark.parametrize("stage_init", ["last", "best"])
def test_packed_multi_stage_runs_equal_single_runs(stage_init, no_dropout_roberta, data_root, tmp_path, monkeypatch):
    """Stage 1 trains the biases, stage 2 the prompt and adapters over stage 1's biases (frozen now,
    still each run's own): the packed runs' deltas are rebuilt per stage."""
    def multi_stage(argv):
        at = argv.index("--training_params")
        return argv[:at + 1] + ["bias", "prompt,adapter", "--stage_init", stage_init] + argv[at + 2:]
    argv = multi_stage(command(no_dropout_roberta, data_root, "bias", ["13", "42"], ["3e-4"]))
    assert run_in(tmp_path / "packed", argv, monkeypatch) == 0
    (tmp_path / "single").mkdir()
    monkeypatch.chdir(tmp_path / "single")
    for seed in ("13", "42"):
        assert main(multi_stage(command(no_dropout_roberta, data_root, "bias", [seed], ["3e-4"]))) == 0
    assert [len(record["stages"]) for record in records(tmp_path / "packed")] == [2, 2]
    assert_runs_equal(tmp_path / "packed", tmp_path / "single")


def test_packed_runs_evaluate_every_epoch_and_log_as_single_runs(no_dropout_roberta, data_root, tmp_path,
                                                                   monkeypatch, capsys):
    """--eval_strategy epoch: each packed run's Trainer evaluates at every epoch's end, and logs its
    loss every --logging_steps, as a single run's does (a loop of its own once called only
    on_step_end: no evaluation, best_step None, no loss logged)."""
    def logged_losses():
        lines = capsys.readouterr().out.splitlines()
        logs = [ast.literal_eval(line) for line in lines if line.startswith("{'loss': ")]
        return sorted((log["epoch"], log["loss"]) for log in logs)
    argv = command(no_dropout_roberta, data_root, "bias", ["13", "21"], ["3e-4"], epochs=2) + ["--logging_steps", "4"]
    capsys.readouterr()
    assert run_in(tmp_path / "packed", argv, monkeypatch) == 0
    packed_losses = logged_losses()
    (tmp_path / "single").mkdir()
    monkeypatch.chdir(tmp_path / "single")
    for seed in ("13", "21"):
        single = command(no_dropout_roberta, data_root, "bias", [seed], ["3e-4"], epochs=2) + ["--logging_steps", "4"]
        assert main(single) == 0
    single_losses = logged_losses()
    for record in records(tmp_path / "packed"):
        assert [step for step, _ in record["stages"][0]["eval_history"]] == [8, 16]
        assert record["stages"][0]["best_step"] in (8, 16)
    assert_runs_equal(tmp_path / "packed", tmp_path / "single")
    every_4_steps = [0.5, 0.5, 1, 1, 1.5, 1.5, 2, 2]  # epochs of the two runs' logs (8 steps per epoch)
    assert [epoch for epoch, _ in packed_losses] == [epoch for epoch, _ in single_losses] == every_4_steps
    assert [loss for _, loss in packed_losses] == pytest.approx([loss for _, loss in single_losses], abs=1e-3)


def test_bf16_autocast_packs_like_single_runs(no_dropout_roberta, data_root, tmp_path, monkeypatch, step_losses):
    """The GPU's precision path (bf16 autocast around the vmapped step) on CPU: bf16 noise only."""
    argv = command(no_dropout_roberta, data_root, "prompt,bias,adapter", ["13", "42"], ["3e-4"])
    argv += ["--bf16", "--use_cpu"]
    environment = dict(os.environ)
    assert run_in(tmp_path / "packed", argv, monkeypatch) == 0
    # TrainingArguments exported ACCELERATE_MIXED_PRECISION=bf16; main takes it back, so that later
    # runs in this process compute in fp32 again
    assert dict(os.environ) == environment
    (tmp_path / "single").mkdir()
    monkeypatch.chdir(tmp_path / "single")
    for seed in ("13", "42"):
        single = command(no_dropout_roberta, data_root, "prompt,bias,adapter", [seed], ["3e-4"])
        assert main(single + ["--bf16", "--use_cpu"]) == 0
    for packed, single in zip(records(tmp_path / "packed"), records(tmp_path / "single")):
        assert packed["bf16"] and packed["stages"][0]["eval_history"] == single["stages"][0]["eval_history"]
    assert step_losses["packed"].keys() == step_losses["single"].keys()
    for run, packed in step_losses["packed"].items():
        assert packed == pytest.approx(step_losses["single"][run], abs=1e-2)


def test_a_diverging_run_and_a_missing_split_fail_alone(no_dropout_roberta, data_root, tmp_path, monkeypatch, capsys):
    # seed 7 has no data folder; learning rate 1e30 makes the loss non-finite within two steps. The
    # survivor trains at 1e-4: Adam's noise amplification (see `command`) scales with the learning rate.
    argv = command(no_dropout_roberta, data_root, "prompt,bias,adapter", ["13", "7"], ["1e-4", "1e30"])
    assert run_in(tmp_path / "packed", argv, monkeypatch) == 1
    errors = sorted(line for line in capsys.readouterr().err.splitlines() if line.startswith("error: "))
    missing = f"--data_dir must be an existing folder, got '{data_root}/k-shot/SST-2/16-7'"
    assert errors[1:] == [f"error: run seed=7 learning_rate=0.0001: {missing}",
                          f"error: run seed=7 learning_rate=1e+30: {missing}"], errors
    assert re.fullmatch(r"error: run seed=13 learning_rate=1e\+30: the training loss became NaN or infinite before "
                        r"step \d; lower --learning_rate \(nothing was logged or saved\)", errors[0]), errors[0]
    assert run_singles(tmp_path / "single", no_dropout_roberta, data_root, "prompt,bias,adapter", ["13"], ["1e-4"],
                       monkeypatch) == [0]
    assert_runs_equal(tmp_path / "packed", tmp_path / "single")


@pytest.mark.parametrize("combination, trainer", [("bias", FoldedTrainer), ("prefix", PackedTrainer)],
                         ids=["folded", "vmapped"])
def test_an_unexpected_error_in_one_run_stops_the_pack_and_is_raised(combination, trainer, tiny_roberta, data_root,
                                                                     tmp_path, monkeypatch):
    """An exception that is not a run's own UserError (a bug, out of memory) stops every run and reaches
    the caller; nothing is logged. Folded: raised in the pack's step; vmapped: in one run's thread."""
    training_step = trainer.training_step

    def failing(self, *args, **kwargs):
        if self.args.seed in (42, 13) and self.state.global_step == 2:  # the folded pack's args: the first run's
            raise RuntimeError("boom")
        return training_step(self, *args, **kwargs)
    monkeypatch.setattr(trainer, "training_step", failing)
    with pytest.raises(RuntimeError, match="boom"):
        run_in(tmp_path / "run", command(tiny_roberta, data_root, combination, ["13", "42", "21"], ["1e-3"]),
               monkeypatch)
    assert not (tmp_path / "run" / "log").exists()


@pytest.mark.parametrize("combination, vmapped", [("prefix", True), ("prompt,bias,adapter", False)],
                         ids=["vmapped", "folded"])
def test_packed_steps_compute_attention_with_the_math_backend_only_under_vmap(combination, vmapped, tiny_roberta,
                                                                              data_root, tmp_path, monkeypatch):
    """Measured on an H200: under vmap the memory-efficient CUDA kernel (the one SDPA picks for our
    attention masks) fails in its backward ("LSE is not correctly aligned"), so every packed run failed
    on a GPU. The vmapped step forces the math backend whatever the device; a CPU cannot reproduce the
    failure, so this checks the backends enabled while attention runs. A folded pack runs no vmap: its
    attention is the base model's, every backend enabled (the fused kernels)."""
    attention, backends = torch.nn.functional.scaled_dot_product_attention, []

    def spy(*args, **kwargs):
        backends.append((torch._C._functorch.maybe_current_level() is not None,  # inside a vmap
                         torch.backends.cuda.mem_efficient_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled(),
                         torch.backends.cuda.math_sdp_enabled()))
        return attention(*args, **kwargs)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    assert run_in(tmp_path / "run", command(tiny_roberta, data_root, combination, ["13", "42"], ["1e-3"],
                                            max_steps=2), monkeypatch) == 0
    under_vmap = {backend[1:] for backend in backends if backend[0]}
    assert under_vmap == ({(False, False, True)} if vmapped else set())
    assert backends and (True, True, True) in {backend[1:] for backend in backends}  # evaluations: every backend


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_run_stacks_keep_tied_weights_tied_and_rows_in_the_stacks(family, tiny_roberta, tiny_bert):
    """Each run's delta parameters become rows of the stacks: a tied name (the MLM decoder bias) stays
    the same parameter, an update of a run's parameter is its row of the stack, and after a backward
    its gradient is a view of the stack's gradient."""
    path = {"roberta": tiny_roberta, "bert": tiny_bert}[family]
    model_args = SimpleNamespace(few_shot_type="prompt", prompt_num=2, adapter_reduction_factor=16,
                                 reference_mode=False, model_name_or_path=path)
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        models.append(build_model(model_args, get_task("SST-2"), [100, 200], ["adapter"], {"prompt"}))
        set_trainable(models[-1], ["bias", "adapter"])
    per_run = src.packed.share_frozen(models, trained_by(["bias", "adapter"]))
    stacks = src.packed.RunStacks(models, per_run)
    decoder = [model.mlm.get_output_embeddings() for model in models]
    for i, model in enumerate(models):
        output_bias = dict(model.named_parameters(remove_duplicate=False))
        tied = [name for name in output_bias if output_bias[name] is decoder[i].bias]
        assert len(tied) == 2 and tied[0] in stacks.stacks, tied
        assert decoder[i].bias.data_ptr() == stacks.stacks[tied[0]][i].data_ptr()
        with torch.no_grad():
            decoder[i].bias.add_(i + 1.0)
        assert torch.equal(stacks.stacks[tied[0]][i], decoder[i].bias)
    assert not torch.equal(decoder[0].bias, decoder[1].bias)
    ids = torch.tensor([[[0, -1, 5, 6, 2]]] * 2)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mask_pos": torch.tensor([[3]] * 2),
             "labels": torch.tensor([[1]] * 2)}
    src.packed.backward_together(src.packed.packed_loss(models[0]), stacks, [
        {name: value[0] for name, value in batch.items()}, {name: value[1] for name, value in batch.items()}], 1)
    for i, model in enumerate(models):
        for name, param in model.named_parameters():
            if param.requires_grad:
                assert param.grad.data_ptr() == stacks.stacks[name].grad[i].data_ptr(), name


def test_skip_done_drops_logged_runs_from_the_pack(tiny_roberta, data_root, tmp_path, monkeypatch, capsys):
    first = command(tiny_roberta, data_root, "bias", ["13", "42"], ["1e-3"], max_steps=2) + ["--skip_done"]
    assert run_in(tmp_path / "run", first, monkeypatch) == 0
    more = command(tiny_roberta, data_root, "bias", ["13", "42", "21"], ["1e-3"], max_steps=2) + ["--skip_done"]
    assert main(more) == 0
    assert capsys.readouterr().err.count("skip: log already holds this run") == 2
    assert [record["seed"] for record in records(tmp_path / "run")] == [13, 42, 21]


@pytest.mark.parametrize("combination, extra, reason", [
    ("all", [], "'all' trains the base model itself"),
    ("bias", ["--label_smoothing_factor", "0.3"], "the Trainer's label smoothing replaces the model's loss"),
    ("bias", ["--neftune_noise_alpha", "5"], "the Trainer's NEFTune noise on the embeddings"),
    ("bias", ["--torch_empty_cache_steps", "1"], "--torch_empty_cache_steps works inside the Trainer's training step"),
], ids=["full fine-tuning", "label smoothing", "NEFTune", "emptying the cache"])
def test_setups_that_cannot_pack_run_one_after_another(combination, extra, reason, tiny_roberta, data_root, tmp_path,
                                                       monkeypatch, capsys):
    argv = command(tiny_roberta, data_root, combination, ["13", "42"], ["1e-3"], max_steps=1) + extra
    assert run_in(tmp_path / "run", argv, monkeypatch) == 0
    assert f"note: 2 runs one after another ({reason}: no shared base)" in capsys.readouterr().err
    assert [record["seed"] for record in records(tmp_path / "run")] == [13, 42]


@pytest.mark.parametrize("combination, extra, reason", [
    ("prefix", [], "prefix: the adapters library computes the prefix once for the whole batch, not per row"),
    ("bias", ["--attach", "lora"], "mlm.roberta.encoder.layer.0.attention.self.query.bias is a parameter of a "
                                   "LoRALinearTorch, which has no folded form"),
    ("bias", ["--optim", "sgd"], None),
], ids=["prefix tuning", "a layer with LoRA", "another optimizer"])
def test_setups_that_cannot_fold_pack_through_vmap(combination, extra, reason, tiny_roberta, data_root, tmp_path,
                                                   monkeypatch, capsys):
    argv = command(tiny_roberta, data_root, combination, ["13", "42"], ["1e-3"], max_steps=1) + extra
    assert run_in(tmp_path / "run", argv, monkeypatch) == 0
    reason = reason or f"--optim {extra[-1]}: the folded pack steps AdamW over the runs' stacks"
    assert f"note: 2 runs packed through vmap, not folded into one batch ({reason})" in capsys.readouterr().err
    assert [record["seed"] for record in records(tmp_path / "run")] == [13, 42]


EXPANSIONS = {  # command line -> the runs' command lines
    "single run unchanged": (["--seed", "13", "--data_dir", "d"], [["--seed", "13", "--data_dir", "d"]]),
    "placeholder in a single run": (["--seed=13", "--data_dir", "d/16-{seed}"],
                                    [["--seed", "13", "--data_dir", "d/16-13"]]),
    "learning rates outer, seeds inner; a folder per run": (
        ["--learning_rate", "1e-3", "3e-4", "--seed", "13", "21", "--output_dir", "o", "--do_train"],
        [["--learning_rate", lr, "--seed", seed, "--output_dir", f"o/lr{lr}-seed{seed}", "--do_train"]
         for lr in ("1e-3", "3e-4") for seed in ("13", "21")]),
    "output_dir with its own placeholder": (
        ["--seed", "1", "2", "--output_dir=o/{seed}"],
        [["--seed", "1", "--output_dir=o/1"], ["--seed", "2", "--output_dir=o/2"]]),
    "json file": (["args.json"], [["args.json"]]),
    "a later occurrence overrides an earlier one": (["--seed", "1", "2", "--data_dir", "d", "--seed=3"],
                                                    [["--data_dir", "d", "--seed", "3"]]),
}


@pytest.mark.parametrize("case", EXPANSIONS)
def test_expand_argv(case):
    argv, runs = EXPANSIONS[case]
    assert expand_argv(argv) == runs


def test_default_output_dir_gets_a_folder_per_run():
    runs = expand_argv(["--seed", "1", "2"])
    assert [run[run.index("--output_dir") + 1] for run in runs] == ["result/tmp/seed1", "result/tmp/seed2"]


@pytest.mark.parametrize("argv, message", [
    (["--seed", "1", "1"], "1 is given twice"),
    (["--data_dir", "d/{seed}"], "{seed} is used but --seed is not given"),
])
def test_expand_argv_errors(argv, message):
    from src.errors import UserError
    with pytest.raises(UserError, match=message):
        expand_argv(argv)
