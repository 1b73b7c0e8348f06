"""The lean step: no host-device sync in the forward, batch lengths rounded up, --torch_compile,
each split scored once per state; none of it changes results beyond float noise."""
from types import SimpleNamespace

import pytest
from accelerate.utils import is_compiled_module
import torch
from torch.func import functional_call, vmap

import src.packed
from src.delta import set_trainable
from src.families import FAMILIES as FAMILY_ROWS
from src.models import build_model
from src.tasks import get_task
from src.trainer import DeltaTrainer, compiled_random_numbers, why_not_lean
from tests.conftest import FAMILIES
from tests.test_packed import assert_runs_equal, command, run_in

SST2 = get_task("SST-2")


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_has_no_data_dependent_branch(family, tiny_of):
    """vmap refuses Python branches on tensor values and `.item()`: the forward (soft prompt, padding
    mask, adapters, prefixes where the family has them, label-word head, loss) runs under it, so it
    never waits for the device."""
    model_args = SimpleNamespace(few_shot_type="prompt", prompt_num=4, adapter_reduction_factor=16, prefix_length=3,
                                 prefix_bottleneck_size=8, reference_mode=False,
                                 model_name_or_path=tiny_of(family, no_dropout=True))
    methods = ["adapter"] + (["prefix"] if "prefix_tuning" in FAMILY_ROWS[family].adapters_methods else [])
    model = build_model(model_args, SST2, [100, 200], methods, {"prompt"})
    names = set_trainable(model, ["prompt", "bias", *methods])
    ids = torch.randint(5, 1000, (2, 3, 12))
    ids[:, :, 1:3] = torch.tensor([-1, -2])
    mask = torch.ones_like(ids)
    mask[0, 0, 9:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "mask_pos": torch.full((2, 3), 5),
             "labels": torch.tensor([[0, 1, 0], [1, 1, 0]])}
    parameters = dict(model.named_parameters())
    stacked = {name: torch.stack([parameters[name], parameters[name] * 1.5]) for name in names}

    def loss(params, inputs):
        return functional_call(model, params, args=(), kwargs=inputs)["loss"]
    losses = vmap(loss)(stacked, batch)
    for k in range(2):
        one = functional_call(model, {name: t[k] for name, t in stacked.items()}, args=(),
                              kwargs={name: t[k] for name, t in batch.items()})["loss"]
        assert losses[k].item() == pytest.approx(one.item(), abs=1e-6)


def test_rounded_batch_lengths_change_nothing(no_dropout_roberta, data_root, tmp_path, monkeypatch):
    argv = command(no_dropout_roberta, data_root, "prompt,bias,adapter", ["42"], ["3e-4"])
    assert run_in(tmp_path / "dynamic", argv, monkeypatch) == 0
    assert run_in(tmp_path / "rounded", argv + ["--pad_to_multiple_of", "16"], monkeypatch) == 0
    assert_runs_equal(tmp_path / "rounded", tmp_path / "dynamic", ignore={"pad_to_multiple_of"})


def test_each_split_is_scored_once_per_state(tiny_roberta, data_root, tmp_path, monkeypatch):
    scored = []
    score = DeltaTrainer.score

    def counting(self, dataset):
        scored.append(dataset.split)
        return score(self, dataset)
    monkeypatch.setattr(DeltaTrainer, "score", counting)
    assert run_in(tmp_path / "run", command(tiny_roberta, data_root, "bias", ["42"], ["1e-3"]), monkeypatch) == 0
    # dev at steps 2 and 4; the best state: dev and test (the final scores reuse them); then train
    assert scored == ["dev", "dev", "dev", "test", "train"]


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [["42"], ["13", "42"]], ids=["single run", "packed runs"])
def test_torch_compile_trains_prompt_bias_and_adapters_like_eager(no_dropout_roberta, data_root, tmp_path,
                                                                   monkeypatch, seeds):
    """--torch_compile (the Trainer's flag, inductor on CPU: about 2 minutes of compiling here); packed
    runs fold, and the pack's Trainer compiles the folded model with inductor (src/packed.py)."""
    argv = command(no_dropout_roberta, data_root, "prompt,bias,adapter", seeds, ["3e-4"], max_steps=2)
    argv += ["--pad_to_multiple_of", "16"]
    assert run_in(tmp_path / "eager", argv, monkeypatch) == 0
    compiled, train = [], src.packed.FoldedTrainer.train

    def recording(self, *args, **kwargs):
        output = train(self, *args, **kwargs)
        compiled.append(is_compiled_module(self.model_wrapped) and self.args.torch_compile_backend)
        return output
    monkeypatch.setattr(src.packed.FoldedTrainer, "train", recording)
    assert run_in(tmp_path / "compiled", argv + ["--torch_compile"], monkeypatch) == 0
    assert compiled == (["inductor"] if len(seeds) > 1 else [])
    assert_runs_equal(tmp_path / "compiled", tmp_path / "eager", ignore={"torch_compile", "torch_compile_backend"})


@pytest.mark.parametrize("compiled", [[], ["--torch_compile", "--torch_compile_backend", "eager"]],
                         ids=["eager", "compiled"])
def test_the_lean_step_optimizer_steps_one_buffer_per_parameter_group(no_dropout_roberta, data_root, tmp_path,
                                                                     monkeypatch, compiled):
    """The lean step with AdamW: the trained tensors and their gradients are views of one buffer per parameter
    group (weight decay or not), which the optimizer holds instead of ~100 tensors; the frozen ones stay apart."""
    seen, train = [], DeltaTrainer.train

    def recording(self, *args, **kwargs):
        output = train(self, *args, **kwargs)
        seen.append((self.optimizer, dict(self.model.named_parameters())))
        return output
    monkeypatch.setattr(DeltaTrainer, "train", recording)
    argv = command(no_dropout_roberta, data_root, "prompt,bias,adapter", ["42"], ["3e-4"], max_steps=2)
    argv += [*compiled, "--weight_decay", "0.1"]
    assert run_in(tmp_path / "run", argv, monkeypatch) == 0
    (optimizer, parameters), = seen
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.1, 0.0]
    buffers = [group["params"] for group in optimizer.param_groups]
    assert all(len(params) == 1 for params in buffers)
    storages = {params[0].untyped_storage().data_ptr(): params[0] for params in buffers}
    grads = {params[0].grad.untyped_storage().data_ptr() for params in buffers}
    trained = {name: p for name, p in parameters.items() if p.requires_grad}
    assert len(trained) > 10 and sum(p.numel() for p in trained.values()) == sum(b.numel() for b in storages.values())
    for name, p in parameters.items():
        assert (p.untyped_storage().data_ptr() in storages) == p.requires_grad, name
        if p.requires_grad:
            assert p.grad is not None and p.grad.untyped_storage().data_ptr() in grads, name


@pytest.mark.parametrize("compiled, device, from_aten", [(True, "cpu", True), (True, "cuda", False),
                                                      (False, "cpu", False)])
def test_compiled_steps_draw_random_numbers_from_aten_on_cpu(compiled, device, from_aten):
    """On CPU inductor's own code builds a Philox generator per random number (~10x slower); on CUDA it stays;
    an eager step compiles nothing, so nothing is patched."""
    import torch._inductor.config as inductor
    with compiled_random_numbers(SimpleNamespace(torch_compile=compiled, device=torch.device(device))):
        assert inductor.fallback_random == from_aten
    assert not inductor.fallback_random


@pytest.mark.parametrize("n_gpu, reason", [
    (1, None), (2, "several GPUs in one process (the Trainer averages their losses)")])
def test_several_gpus_in_one_process_take_the_trainers_own_step(n_gpu, reason):
    """The Trainer's step averages DataParallel's per-GPU losses; the lean step would not."""
    args = SimpleNamespace(gradient_accumulation_steps=1, fp16=False, world_size=1, deepspeed=None, fsdp=None,
                           n_gpu=n_gpu, optim=SimpleNamespace(value="adamw_torch_fused"), torch_empty_cache_steps=None)
    assert why_not_lean(args) == reason
