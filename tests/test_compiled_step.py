"""The lean step (src/trainer.py's `lean_step`, every single run's, compiled with `--torch_compile`): the
Trainer's own `train()` with its per-step walks over the model's modules gone (and the forward and backward
compiled); every result equals the Trainer's own step's (tiny RoBERTa, dropout off). Dynamo's `eager`
backend traces the model as inductor's would but compiles nothing (seconds); tests/test_lean_step.py trains
with inductor itself."""
import pytest
import torch
from accelerate.utils import is_compiled_module

import src.trainer
from src.packed import FoldedTrainer
from src.trainer import DeltaTrainer
from tests.test_packed import TOLERANCE, assert_runs_equal, command, run_in, run_singles

pytestmark = pytest.mark.slow  # about 30 s of CPU; minutes under load

COMPILED = ["--torch_compile", "--torch_compile_backend", "eager", "--pad_to_multiple_of", "16"]
IGNORE = {"torch_compile", "torch_compile_backend"}


@pytest.fixture
def logs(monkeypatch):
    """Every Trainer's log history and whether it took the lean step, in the order they trained."""
    seen = []
    train = DeltaTrainer.train

    def recording(self, *args, **kwargs):
        output = train(self, *args, **kwargs)
        assert "zero_grad" not in vars(self.model) and "zero_grad" not in vars(self.model_wrapped)
        seen.append((self.lean, self.state.log_history))
        return output
    monkeypatch.setattr(DeltaTrainer, "train", recording)
    return seen


@pytest.fixture
def training_modes(monkeypatch):
    """For each training forward: whether every module of the model was in training mode (dropout on)."""
    seen = []
    compute_loss = DeltaTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        if torch.is_grad_enabled():
            seen.append(all(module.training for module in self.model.modules()))
        return compute_loss(self, model, inputs, *args, **kwargs)
    monkeypatch.setattr(DeltaTrainer, "compute_loss", recording)
    return seen


def assert_logs_equal(lean, reference):
    assert len(lean) == len(reference)
    for (_, history_c), (_, history_e) in zip(lean, reference):
        assert [set(entry) for entry in history_c] == [set(entry) for entry in history_e]
        for entry_c, entry_e in zip(history_c, history_e):
            for key in entry_c.keys() - {"train_runtime", "train_samples_per_second", "train_steps_per_second"}:
                assert entry_c[key] == pytest.approx(entry_e[key], abs=TOLERANCE), key


@pytest.mark.parametrize("schedule", [dict(max_steps=4), dict(epochs=2)], ids=["eval every 2 steps", "every epoch"])
def test_lean_and_compiled_steps_equal_the_trainers_own_step(no_dropout_roberta, data_root, tmp_path, monkeypatch, logs,
                                                            training_modes, schedule):
    """Records (dev history, best step, scores), saved deltas and the Trainer's logs (loss, grad_norm,
    learning rate, each evaluation) of the lean step, eager and compiled, within 1e-5 of the Trainer's own
    step's; two stages, so two Trainers in one run; every training forward in training mode, after the
    evaluations too."""
    argv = command(no_dropout_roberta, data_root, "prompt,bias", ["42"], ["3e-4"], **schedule)
    argv.insert(argv.index("prompt,bias") + 1, "adapter")
    argv += ["--pad_to_multiple_of", "16", "--logging_steps", "1", "--max_grad_norm", "0.01"]
    with monkeypatch.context() as patch:
        patch.setattr(src.trainer, "why_not_lean", lambda args: "the reference")
        assert run_in(tmp_path / "reference", argv, monkeypatch) == 0
    reference = logs[:]
    assert run_in(tmp_path / "eager", argv, monkeypatch) == 0
    eager = logs[len(reference):]
    assert run_in(tmp_path / "compiled", argv + COMPILED, monkeypatch) == 0
    compiled = logs[len(reference) + len(eager):]
    assert [lean for lean, _ in reference] == [False, False]
    assert [lean for lean, _ in eager] == [True, True] and [lean for lean, _ in compiled] == [True, True]
    assert training_modes and all(training_modes)  # after each evaluation too
    assert any("grad_norm" in entry for _, history in compiled for entry in history)
    for lean, folder, ignore in [(eager, "eager", set()), (compiled, "compiled", IGNORE | {"pad_to_multiple_of"})]:
        assert_logs_equal(lean, reference)
        assert_runs_equal(tmp_path / folder, tmp_path / "reference", ignore=ignore)


@pytest.mark.parametrize("option, reason", [
    (["--gradient_accumulation_steps", "2"], "gradient accumulation"),
    (["--torch_empty_cache_steps", "2"], "--torch_empty_cache_steps works inside the Trainer's training step"),
])
def test_compiled_step_does_not_apply(tiny_roberta, data_root, tmp_path, monkeypatch, capsys, logs, option, reason):
    """Where the Trainer's own step must run, --torch_compile compiles the model's forward only, and says so."""
    argv = command(tiny_roberta, data_root, "bias", ["42"], ["1e-3"], max_steps=2) + COMPILED + option
    assert run_in(tmp_path / "run", argv, monkeypatch) == 0
    assert f"note: --torch_compile compiles the model's forward only ({reason})" in capsys.readouterr().err
    assert [lean for lean, _ in logs] == [False]


@pytest.mark.parametrize("combination, folded", [("prompt,bias,adapter", True), ("prefix", False)],
                         ids=["folded pack", "vmapped pack"])
def test_compiled_pack_equals_its_eager_runs(combination, folded, no_dropout_roberta, data_root, tmp_path, monkeypatch,
                                             capsys):
    """--torch_compile on a pack: a folded pack's Trainer compiles the folded model; a vmapped pack's steps stay
    eager (a compiled vmapped step diverged to NaN), and its note says so. Either way, the runs' records and saved
    deltas equal the eager single runs' within 1e-5."""
    seeds, extra = ["13", "42"], ["--pad_to_multiple_of", "16", "--max_grad_norm", "0.01"]
    assert run_singles(tmp_path / "eager", no_dropout_roberta, data_root, combination, seeds, ["3e-4"], monkeypatch,
                       extra) == [0, 0]
    compiled, train = [], FoldedTrainer.train

    def recording(self, *args, **kwargs):
        output = train(self, *args, **kwargs)
        compiled.append(is_compiled_module(self.model_wrapped))
        return output
    monkeypatch.setattr(FoldedTrainer, "train", recording)
    capsys.readouterr()
    argv = command(no_dropout_roberta, data_root, combination, seeds, ["3e-4"]) + extra + COMPILED
    assert run_in(tmp_path / "compiled", argv, monkeypatch) == 0
    note = "note: 2 runs packed through vmap, not folded into one batch"
    if folded:
        assert compiled == [True] and note not in capsys.readouterr().err
    else:
        assert compiled == [] and "; their training steps are not compiled" in capsys.readouterr().err
    assert_runs_equal(tmp_path / "compiled", tmp_path / "eager", ignore=IGNORE)
