"""The models: the prompt model (dynamic padding and mask-only scoring equal the reference computation) and
finetune mode's classification or regression head."""
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

import run
from src.dataset import Collator, FewShotDataset
from src.delta import METHODS, trained_by
from src.families import family_of
from src.models import PromptMLM, build_model, regression_prediction
from src.random_models import create
from src.tasks import get_task
from src.templates import label_word_ids, parse_mapping
from tests.test_run_cli import log_records, readme_example


def model_and_batch(model_dir, data_root, tmp_path, task_name="SST-2", seed_dir="16-42"):
    task = get_task(task_name)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    features = SimpleNamespace(task_name=task.name, data_dir=str(data_root / "k-shot" / task.name / seed_dir),
                               template=task.template("Y", prompt=True), mapping=task.mapping,
                               few_shot_type="prompt", max_seq_length=128, prompt_num=10, seed=42)
    dataset = FewShotDataset(features, tokenizer, "test", cache_dir=tmp_path)
    items = [dataset[i] for i in range(16)]
    words = label_word_ids(tokenizer, parse_mapping(task.mapping, task.labels), task.labels)
    model_args = SimpleNamespace(few_shot_type="prompt", model_name_or_path=model_dir, prompt_num=10,
                                 adapter_reduction_factor=16, lora_r=8, lora_alpha=8, prefix_length=4,
                                 prefix_bottleneck_size=16, reference_mode=False)
    # Every method with modules that the family takes (prefix tuning: its prefix is always visible, whatever
    # the padding); ModernBERT: the adapters library runs one of its methods at a time
    family = family_of(AutoConfig.from_pretrained(model_dir))
    attached = ["adapter"] if family.adapters_alone else [
        name for name in ("adapter", "lora", "prefix") if METHODS[name].adapters_method in family.adapters_methods]
    torch.manual_seed(0)
    model = build_model(model_args, task, words, attached, {"prompt"}).eval()
    with torch.no_grad():  # non-zero deltas, so that they take part in the comparison
        for name, parameter in model.named_parameters():
            if trained_by(["adapter", "lora", "prefix", "prompt"])(name):
                parameter.normal_(0, 0.05)
    return model, items, tokenizer.pad_token_id


def test_dynamic_padding_and_mask_only_head_match_the_reference(tiny_model, data_root, tmp_path):
    assert_matches_the_reference(tiny_model, data_root, tmp_path)


def test_deberta_original_head_matches_the_reference(data_root, tmp_path):
    """DeBERTa-v2 with config.legacy false: the original head (`lm_predictions`, v1/v2 checkpoints),
    saved with tie_word_embeddings true as on the hub; untied at loading (src/families.py), it runs."""
    folder = create("deberta-v2", tmp_path / "model", legacy=False)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    assert_matches_the_reference(str(folder), data_root, tmp_path)


def assert_matches_the_reference(model_dir, data_root, tmp_path):
    model, items, pad_id = model_and_batch(model_dir, data_root, tmp_path)
    dynamic = Collator(pad_id)(items)
    padded = Collator(pad_id, pad_to=128)(items)
    assert dynamic["input_ids"].shape[1] < 128
    with torch.no_grad():
        fast = model(**dynamic)["logits"]
        model.reference_mode = True
        reference = model(**padded)["logits"]
    assert fast.shape == (16, 2)
    assert torch.allclose(fast, reference, atol=1e-5, rtol=0), (fast - reference).abs().max()


def test_regression_loss_keeps_the_reference_quirk(tiny_roberta, data_root, tmp_path):
    model, items, pad_id = model_and_batch(tiny_roberta, data_root, tmp_path, "STS-B")
    assert model.regression and isinstance(model, PromptMLM)
    batch = Collator(pad_id)(items[:4])
    assert batch["labels"].dtype == torch.float
    with torch.no_grad():
        output = model(**batch)
    logp = output["logits"]
    assert torch.allclose(logp.exp().sum(-1), torch.ones(4), atol=1e-6)
    p = batch["labels"] / 5.0
    target = torch.stack([1 - p, p], -1)
    with pytest.warns(UserWarning):  # torch warns about reduction='mean', the reference's setting
        expected = torch.nn.KLDivLoss(log_target=True)(logp, target)
    assert torch.allclose(output["loss"], expected, atol=1e-6)
    assert torch.allclose(regression_prediction(logp, (0.0, 5.0)), logp[:, 1].exp() * 5)
    assert torch.allclose(regression_prediction(logp, (1.0, 3.0)), 1 + logp[:, 1].exp() * 2)


@pytest.mark.parametrize("methods", [[], ["adapter"], ["adapter", "lora"]])
def test_finetune_mode_has_a_classification_head(methods, tiny_roberta):
    task = get_task("SST-2")
    args = SimpleNamespace(few_shot_type="finetune", model_name_or_path=tiny_roberta, prompt_num=10,
                           adapter_reduction_factor=16, lora_r=8, lora_alpha=8, reference_mode=False)
    model = build_model(args, task, None, methods)
    assert model.config.num_labels == 2
    assert any(name.startswith("classifier.") for name, _ in model.named_parameters())


@pytest.mark.parametrize("problem_type", [None, "single_label_classification"])
def test_finetune_regression_head_outputs_the_score_trained_with_mse(problem_type, tiny_roberta, data_root, tmp_path):
    """STS-B in finetune mode (LM-BFF): one output, MSE against the score, and the output is the prediction;
    whatever problem_type the checkpoint holds (a classifier's would make the loss a cross-entropy)."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_roberta, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "problem_type": problem_type}))
    task = get_task("STS-B")
    settings = SimpleNamespace(task_name=task.name, data_dir=str(data_root / "k-shot/STS-B/16-42"),
                               few_shot_type="finetune", max_seq_length=64)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = FewShotDataset(settings, tokenizer, "dev", cache_dir=tmp_path)
    batch = Collator(tokenizer.pad_token_id)([dataset[i] for i in range(4)])
    args = SimpleNamespace(few_shot_type="finetune", model_name_or_path=str(model_dir), reference_mode=False)
    with torch.no_grad():
        output = build_model(args, task, None, []).eval()(**batch)
    assert output.logits.shape == (4, 1)
    assert torch.allclose(output.loss, torch.nn.functional.mse_loss(output.logits[:, 0], batch["labels"]))
    assert torch.equal(regression_prediction(output.logits, task.label_range), output.logits[:, 0])


def test_finetune_regression_trains_and_scores(tiny_roberta, data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = readme_example(tiny_roberta, data_root, tmp_path, **{
        "--task_name": "STS-B", "--data_dir": str(data_root / "k-shot/STS-B/16-42"), "--few_shot_type": "finetune",
        "--template": None, "--mapping": None, "--training_params": "bias", "--max_seq_length": "64"})
    argv.remove("--use_adapters")
    assert run.main(argv) == 0
    [record] = log_records(tmp_path)
    for split in ["train", "dev", "test"]:
        assert -1.0 <= record[f"sts-b_{split}_eval_pearson"] <= 1.0
    assert [step for step, _ in record["stages"][0]["eval_history"]] == [2, 4]
