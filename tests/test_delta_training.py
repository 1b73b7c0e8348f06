"""Each delta combination trains exactly its parameters; stages keep earlier stages frozen (SPEC §1, §2)."""
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, TrainerCallback

from src.arguments import DeltaTrainingArguments
from src.dataset import Collator, FewShotDataset
from src.delta import METHODS, Stages, set_trainable
from src.families import FAMILIES
from src.models import build_model
from src.tasks import get_task
from src.templates import label_word_ids, parse_mapping
from src.trainer import DeltaTrainer, train_in_stages
from tests.test_packed import command, records, run_in

# The paper's seven, LoRA and prefix tuning alone and with each other method, and full fine-tuning.
COMBINATIONS = ["prompt", "bias", "adapter", "prompt,adapter", "bias,adapter", "prompt,bias",
                "prompt,bias,adapter", "lora", "prompt,lora", "bias,lora", "adapter,lora",
                "prefix", "prompt,prefix", "bias,prefix", "adapter,prefix", "lora,prefix", "all"]
# Every combination on RoBERTa and BERT; on the newer families the paper's seven, LoRA alone, LoRA with the
# adapter where the family can run both (ModernBERT refuses them: tests/test_bad_input.py), and on DeBERTa-v2
# prefix tuning alone and with the others (ModernBERT has none: tests/test_bad_input.py).
FAMILY_COMBINATIONS = ([(family, combination) for family in ("roberta", "bert") for combination in COMBINATIONS]
                       + [(family, combination) for family in ("deberta-v2", "modernbert")
                          for combination in COMBINATIONS[:8]]
                       + [("deberta-v2", combination)
                          for combination in ("adapter,lora", "prefix", "adapter,lora,prefix")])
SST2 = get_task("SST-2")


class Setup:
    """A tiny model with prompt table and adapters, real SST-2 k-shot features, a trainer factory."""

    def __init__(self, model_dir, data_root, cache_dir, output_dir, attached=("adapter", "lora", "prefix")):
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        features = SimpleNamespace(task_name="SST-2", data_dir=str(data_root / "k-shot/SST-2/16-42"),
                                   template=SST2.template("Y", prompt=True), mapping=SST2.mapping,
                                   few_shot_type="prompt", max_seq_length=64, prompt_num=10, seed=42)
        self.train = FewShotDataset(features, self.tokenizer, "train", cache_dir=cache_dir)
        self.dev = FewShotDataset(features, self.tokenizer, "dev", cache_dir=cache_dir)
        words = label_word_ids(self.tokenizer, parse_mapping(SST2.mapping, SST2.labels), SST2.labels)
        model_args = SimpleNamespace(few_shot_type="prompt", model_name_or_path=model_dir, prompt_num=10,
                                     adapter_reduction_factor=16, lora_r=8, lora_alpha=8, prefix_length=5,
                                     prefix_bottleneck_size=16, reference_mode=False)
        torch.manual_seed(0)
        self.model = build_model(model_args, SST2, words, attached, {"prompt"})
        self.output_dir = output_dir
        self.trainers = []

    def make_trainer(self, model, max_steps=3, eval_steps=None, callbacks=()):
        args = DeltaTrainingArguments(output_dir=str(self.output_dir), max_steps=max_steps, learning_rate=1e-2,
                                      per_device_train_batch_size=4, eval_strategy="steps" if eval_steps else "no",
                                      eval_steps=eval_steps, disable_tqdm=True, use_cpu=True,
                                      dataloader_pin_memory=False, seed=1)
        trainer = DeltaTrainer(model=model, args=args, train_dataset=self.train, eval_dataset=self.dev,
                               data_collator=Collator(self.tokenizer.pad_token_id), task=SST2,
                               callbacks=list(callbacks))
        self.trainers.append(trainer)
        return trainer


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def selected(name, methods):
    return any(METHODS[m].selects(name) for m in methods)


@pytest.mark.parametrize("family, combination", FAMILY_COMBINATIONS)
def test_only_the_chosen_parameters_train(family, combination, tiny_of, data_root, tmp_path):
    methods = combination.split(",")
    # every method with modules that the family takes, trained or frozen
    attached = [name for name in ("adapter", "lora", "prefix")
                if METHODS[name].adapters_method in FAMILIES[family].adapters_methods]
    if FAMILIES[family].adapters_alone:  # ModernBERT: the adapters library runs one of its methods at a time
        attached = [name for name in attached if name in methods] or ["adapter"]
    setup = Setup(tiny_of(family), data_root, tmp_path / "cache", tmp_path / "out", attached)
    before = snapshot(setup.model)
    trainable = set(set_trainable(setup.model, methods))
    trainer = setup.make_trainer(setup.model)
    trainer.train()

    chosen = {name for name in before if selected(name, methods)}
    assert trainable == chosen and chosen
    parameters = dict(setup.model.named_parameters())
    changed = {name for name in before if not torch.equal(before[name], parameters[name])}
    assert changed == chosen, (sorted(chosen - changed)[:5], sorted(changed - chosen)[:5])
    assert all(parameters[name].grad is None for name in parameters if name not in chosen)
    # the optimizer holds the chosen tensors, laid end to end in buffers (the lean step), and nothing else
    held = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    storages = {p.untyped_storage().data_ptr() for p in held}
    assert all((p.untyped_storage().data_ptr() in storages) == (name in chosen) for name, p in parameters.items())
    assert sum(p.numel() for p in held) == sum(parameters[name].numel() for name in chosen)
    if combination != "all":
        assert not any(selected(name, methods) for name in parameters if "word_embeddings" in name)


@pytest.mark.parametrize("combination", ["bias", "prompt,bias,adapter", "all"])
def test_a_trainer_checkpoint_is_the_runs_delta_at_its_step(combination, tiny_roberta, data_root, tmp_path,
                                                             monkeypatch):
    """--save_strategy: each checkpoint holds the run's delta at that step (SPEC §6: not the frozen model, whose tied
    weights stopped safetensors), as run.py saves it at the end, beside the Trainer's own files; --delta_path loads
    it and scores as the run did."""
    trained, train = [], DeltaTrainer.train

    def recording(self, *args, **kwargs):
        output = train(self, *args, **kwargs)
        trained.append({name: p.detach().clone() for name, p in self.model.named_parameters() if p.requires_grad})
        return output
    monkeypatch.setattr(DeltaTrainer, "train", recording)
    argv = command(tiny_roberta, data_root, combination, ["42"], ["1e-3"], max_steps=2)  # one evaluation: step 2
    assert run_in(tmp_path / "run", argv + ["--save_strategy", "steps", "--save_steps", "1"], monkeypatch) == 0
    (last,) = trained
    run = tmp_path / "run/out/lr1e-3-seed42"
    checkpoints = [run / f"checkpoint-{step}" for step in (1, 2)]
    assert all((folder / name).is_file() for folder in checkpoints
               for name in ("delta_config.json", "optimizer.pt", "trainer_state.json", "training_args.bin"))
    saved = [load_file(str(folder / "delta.safetensors")) for folder in checkpoints]
    final = load_file(str(run / "delta.safetensors"))  # the best dev state: step 2's
    assert set(saved[0]) == set(saved[1]) == set(final) >= set(last)
    assert all(torch.equal(saved[1][name], final[name]) for name in final)
    assert any(not torch.equal(saved[0][name], last[name]) for name in last)  # step 1's state, not the last
    reload = [arg for arg in argv if arg != "--do_train"] + ["--delta_path", str(checkpoints[1])]
    assert run_in(tmp_path / "reload", reload, monkeypatch) == 0
    (record,), (reloaded,) = records(tmp_path / "run"), records(tmp_path / "reload")
    assert reloaded["sst-2_dev_eval_acc"] == record["sst-2_dev_eval_acc"]
    assert reloaded["sst-2_test_eval_acc"] == record["sst-2_test_eval_acc"]


def test_a_multi_stage_runs_checkpoints_go_to_a_folder_per_stage(tiny_roberta, data_root, tmp_path, monkeypatch):
    """Each stage counts its steps from 0: its checkpoint-STEP folders go under stageN, not over the last stage's."""
    argv = command(tiny_roberta, data_root, "bias", ["42"], ["1e-3"], max_steps=2)
    at = argv.index("--training_params")
    argv[at + 1:at + 2] = ["prompt", "bias"]
    assert run_in(tmp_path / "run", argv + ["--save_strategy", "steps", "--save_steps", "2"], monkeypatch) == 0
    run = tmp_path / "run/out/lr1e-3-seed42"
    deltas = [load_file(str(run / f"stage{stage}/checkpoint-2/delta.safetensors")) for stage in (1, 2)]
    prompts = [name for name in deltas[0] if METHODS["prompt"].selects(name)]
    biases = [name for name in deltas[0] if METHODS["bias"].selects(name)]
    assert prompts and all(torch.equal(deltas[0][name], deltas[1][name]) for name in prompts)  # frozen in stage 2
    assert any(not torch.equal(deltas[0][name], deltas[1][name]) for name in biases)  # trained in stage 2
    assert not (run / "checkpoint-2").exists()


class Snapshots(TrainerCallback):
    """Parameter copies at the start and end of each stage's training."""

    def __init__(self):
        self.begin, self.end = [], []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.begin.append(snapshot(model))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.end.append(snapshot(model))


def group_equal(a, b, method, exclude=None):
    names = [n for n in a if METHODS[method].selects(n) and not (exclude and METHODS[exclude].selects(n))]
    return all(torch.equal(a[n], b[n]) for n in names)


def test_stages_freeze_earlier_stages_and_record_results(tiny_roberta, data_root, tmp_path):
    setup = Setup(tiny_roberta, data_root, tmp_path / "cache", tmp_path / "out")
    snaps = Snapshots()
    results, _ = train_in_stages(setup.model, Stages.parse(["prompt", "bias", "adapter"]),
                                 lambda m, stage=None: setup.make_trainer(m, max_steps=3, eval_steps=1,
                                                                          callbacks=[snaps]),
                                 {"dev": setup.dev})
    begin, end = snaps.begin, snaps.end
    assert not group_equal(begin[0], end[0], "prompt")
    assert group_equal(begin[1], end[1], "prompt") and not group_equal(begin[1], end[1], "bias")
    # Stage 3 trains the adapters (their own biases included); the model's biases stay put.
    assert group_equal(begin[2], end[2], "prompt") and group_equal(begin[2], end[2], "bias", exclude="adapter")
    assert not group_equal(begin[2], end[2], "adapter")
    assert [r["training_params"] for r in results] == ["prompt", "bias", "adapter"]
    for result in results:
        assert [step for step, _ in result["eval_history"]] == [1, 2, 3]
        assert result["best_step"] in (1, 2, 3) and "acc" in result["dev"]
    # Reference behaviour: stage 2 starts from the end of stage 1, not its best state.
    assert group_equal(end[0], begin[1], "prompt")
    # The model ends in the best dev state of the last stage.
    final = snapshot(setup.model)
    best = setup.trainers[-1].best_state
    assert all(torch.equal(final[name], tensor) for name, tensor in best.items())


def test_stage_init_best_starts_from_previous_best(tiny_roberta, data_root, tmp_path):
    setup = Setup(tiny_roberta, data_root, tmp_path / "cache", tmp_path / "out")
    snaps = Snapshots()
    train_in_stages(setup.model, Stages.parse(["bias", "adapter"]),
                    lambda m, stage=None: setup.make_trainer(m, max_steps=4, eval_steps=1, callbacks=[snaps]),
                    {"dev": setup.dev}, stage_init="best")
    first = setup.trainers[0]
    assert first.best_step < 4, "the test needs a best step before the last one"
    start_of_second = snaps.begin[1]
    assert all(torch.equal(start_of_second[name], tensor) for name, tensor in first.best_state.items())
    assert not group_equal(snaps.end[0], start_of_second, "bias")


@pytest.mark.parametrize("stages", [["lora", "prompt,adapter"], ["prefix", "bias,lora"]], ids=["lora", "prefix"])
def test_a_method_of_stage_1_stays_frozen_in_stage_2(stages, tiny_roberta, data_root, tmp_path):
    setup = Setup(tiny_roberta, data_root, tmp_path / "cache", tmp_path / "out")
    snaps = Snapshots()
    results, _ = train_in_stages(setup.model, Stages.parse(stages),
                                 lambda m, stage=None: setup.make_trainer(m, max_steps=3, eval_steps=3,
                                                                          callbacks=[snaps]),
                                 {"dev": setup.dev})
    stage_1, stage_2 = zip(snaps.begin, snaps.end)  # (parameters at its start, at its end)
    first, second = stages[0].split(","), stages[1].split(",")
    assert all(not group_equal(*stage_1, name) for name in first)
    assert all(group_equal(*stage_1, name, exclude=first[0]) for name in second)
    # stage 2's BitFit trains the biases of stage 1's modules too (as those of frozen adapters, SPEC §1)
    assert all(group_equal(*stage_2, name, exclude="bias") for name in first)
    assert all(not group_equal(*stage_2, name) for name in second)
    assert [r["training_params"] for r in results] == stages
