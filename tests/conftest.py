"""Shared fixtures: the data root (env DELTA_DATA_DIR, default ../shared/data) and tiny models."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from src.random_models import TINY_MODELS, create  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

DATA_ROOT = Path(os.environ.get("DELTA_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root():
    if not (DATA_ROOT / "k-shot").is_dir():
        pytest.fail(f"real data not found at {DATA_ROOT} (set DELTA_DATA_DIR)")
    return DATA_ROOT


NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # ModernBERT has none anyway
FAMILIES = list(TINY_MODELS)  # roberta, bert, deberta-v2, modernbert


def tiny(model_type, **overrides):
    """A session fixture: the tiny model of `model_type` (src/random_models.py), made on first use."""
    @pytest.fixture(scope="session")
    def fixture(tmp_path_factory):
        return str(create(model_type, tmp_path_factory.mktemp(f"tiny-{model_type}"), **overrides))
    return fixture


def fixture_name(family, no_dropout=False):
    return f"{'no_dropout' if no_dropout else 'tiny'}_{family.replace('-', '_')}"


tiny_roberta, tiny_bert, tiny_deberta_v2, tiny_modernbert = (tiny(family) for family in FAMILIES)
# Tiny models without dropout: runs that must agree within float noise.
no_dropout_roberta, no_dropout_bert, no_dropout_deberta_v2, no_dropout_modernbert = (
    tiny(family, **NO_DROPOUT) for family in FAMILIES)


@pytest.fixture
def tiny_of(request):
    """tiny_of(family, no_dropout=False) -> that family's tiny model folder (made on first use)."""
    return lambda family, no_dropout=False: request.getfixturevalue(fixture_name(family, no_dropout))


@pytest.fixture(scope="session", params=FAMILIES)
def tiny_model(request):
    """Each test using this runs once per model family."""
    return request.getfixturevalue(fixture_name(request.param))


@pytest.fixture(scope="session")
def roberta_tokenizer(tiny_roberta):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_roberta)


@pytest.fixture(scope="session")
def bert_tokenizer(tiny_bert):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_bert)
