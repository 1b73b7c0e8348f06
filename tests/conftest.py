"""Shared fixtures: the data root (env DELTA_DATA_DIR, default ../shared/data) and tiny models; the order
in which tests start."""
import collections
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from src.families import FAMILIES as FAMILY_ROWS  # noqa: E402
from src.random_models import create  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

DATA_ROOT = Path(os.environ.get("DELTA_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()


def pytest_collection_modifyitems(items):
    """Longest first: the tests and xdist groups whose `duration` marks sum highest ahead of the rest (which
    keep their order), and in a group its longest tests first. A worker of .ci/run's first step (`--dist
    loadgroup --no-loadscope-reorder`) takes the next test or group as soon as it has two or fewer tests left,
    so a long one left for last, or taken behind a group's long tail, keeps that worker minutes after the other
    has finished (measured with the slow tests alone: 467-527 s with the groups ordered by their count of tests)."""
    def unit(item):
        group = item.get_closest_marker("xdist_group")
        return (group.kwargs.get("name") or group.args[0]) if group else item.nodeid

    def seconds(item):
        mark = item.get_closest_marker("duration")
        return mark.args[0] if mark else 0

    total = collections.Counter()
    for item in items:
        total[unit(item)] += seconds(item)
    items.sort(key=lambda item: (-total[unit(item)], -seconds(item)))


@pytest.fixture(scope="session")
def data_root():
    if not (DATA_ROOT / "k-shot").is_dir():
        pytest.fail(f"real data not found at {DATA_ROOT} (set DELTA_DATA_DIR)")
    return DATA_ROOT


NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # ModernBERT has none anyway
# Every row of src/families.py (roberta, bert, deberta-v2, modernbert): a row without a tiny model fails the
# tests that use it.
FAMILIES = list(FAMILY_ROWS)


def fixture_name(family, no_dropout=False):
    return f"{'no_dropout' if no_dropout else 'tiny'}_{family.replace('-', '_')}"


def tiny(model_type, no_dropout=False):
    """A session fixture (tiny_roberta, ...; without dropout, for runs that must agree within float noise:
    no_dropout_roberta, ...): the tiny model of `model_type` (src/random_models.py), made on first use."""
    @pytest.fixture(scope="session", name=fixture_name(model_type, no_dropout))
    def fixture(tmp_path_factory):
        return str(create(model_type, tmp_path_factory.mktemp(f"tiny-{model_type}"),
                          **(NO_DROPOUT if no_dropout else {})))
    return fixture


globals().update({fixture_name(family, no_dropout): tiny(family, no_dropout)
                  for family in FAMILIES for no_dropout in (False, True)})


@pytest.fixture
def tiny_of(request):
    """tiny_of(family, no_dropout=False) -> that family's tiny model folder (made on first use)."""
    return lambda family, no_dropout=False: request.getfixturevalue(fixture_name(family, no_dropout))


@pytest.fixture(scope="session", params=FAMILIES)
def tiny_model(request):
    """Each test using this runs once per model family."""
    return request.getfixturevalue(fixture_name(request.param))


@pytest.fixture(scope="session")
def headless_bert(tiny_bert, tmp_path_factory):
    """The tiny BERT with a checkpoint that lacks its MLM head, as the quick start's MiniLM does."""
    from safetensors.torch import load_file, save_file
    folder = tmp_path_factory.mktemp("headless") / "model"
    shutil.copytree(tiny_bert, folder)
    state = load_file(str(folder / "model.safetensors"))
    save_file({name: tensor for name, tensor in state.items() if not name.startswith("cls.")},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    return str(folder)


@pytest.fixture(scope="session")
def roberta_tokenizer(tiny_roberta):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_roberta)


@pytest.fixture(scope="session")
def bert_tokenizer(tiny_bert):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_bert)
