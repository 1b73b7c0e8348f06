"""Shared fixtures: the data root (env DELTA_DATA_DIR, default ../shared/data) and tiny models."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from src.random_models import create  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

DATA_ROOT = Path(os.environ.get("DELTA_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root():
    if not (DATA_ROOT / "k-shot").is_dir():
        pytest.fail(f"real data not found at {DATA_ROOT} (set DELTA_DATA_DIR)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory):
    return str(create("roberta", tmp_path_factory.mktemp("tiny-roberta")))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return str(create("bert", tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session", params=["roberta", "bert"])
def tiny_model(request, tiny_roberta, tiny_bert):
    """Each test using this runs once per model family."""
    return {"roberta": tiny_roberta, "bert": tiny_bert}[request.param]


NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="session")
def no_dropout_roberta(tmp_path_factory):
    """Tiny models without dropout: runs that must agree within float noise."""
    return str(create("roberta", tmp_path_factory.mktemp("tiny-roberta-no-dropout"), **NO_DROPOUT))


@pytest.fixture(scope="session")
def no_dropout_bert(tmp_path_factory):
    return str(create("bert", tmp_path_factory.mktemp("tiny-bert-no-dropout"), **NO_DROPOUT))


@pytest.fixture(scope="session")
def roberta_tokenizer(tiny_roberta):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_roberta)


@pytest.fixture(scope="session")
def bert_tokenizer(tiny_bert):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_bert)
