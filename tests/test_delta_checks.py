"""--delta_path files that do not fit are one clear error each: corrupt, partial, wrong names, shapes,
dtypes, NaN values, missing tensors."""
import json
import os
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForMaskedLM

import run
from src.delta.checkpoint import CONFIG, WEIGHTS, load_delta, read_delta, save_delta
from src.errors import UserError
from tests.test_bad_input import base_arguments, no_hang, to_argv


@pytest.fixture
def saved(tiny_roberta, tmp_path):
    """A tiny model and the folder of its saved BitFit delta."""
    model = AutoModelForMaskedLM.from_pretrained(tiny_roberta)
    save_delta(model, ["bias"], ["bias"], tmp_path / "delta", {"task_name": "sst-2"})()
    return model, tmp_path / "delta"


def rewrite(folder, change):
    state = load_file(str(folder / WEIGHTS))
    save_file(change(state), str(folder / WEIGHTS))


FROZEN = "roberta.embeddings.word_embeddings.weight"


def first(state):
    return next(iter(state))


DAMAGE = {
    "corrupt file": (lambda d: (d / WEIGHTS).write_bytes(b"\x00garbage" * 10), "unreadable"),
    "partial file": (lambda d: (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:-100]), "unreadable"),
    "empty file": (lambda d: (d / WEIGHTS).write_bytes(b""), "unreadable"),
    "wrong shape": (lambda d: rewrite(d, lambda s: {**s, first(s): torch.zeros(3)}), "has shape"),
    "NaN values": (lambda d: rewrite(d, lambda s: {**s, first(s): torch.full_like(s[first(s)], float("nan"))}),
                   "NaN"),
    "integer dtype": (lambda d: rewrite(d, lambda s: {**s, first(s): s[first(s)].long()}), "dtype"),
    "unknown tensor": (lambda d: rewrite(d, lambda s: {**s, "extra.weight": torch.zeros(2)}), "extra.weight"),
    "tensors missing": (lambda d: rewrite(d, lambda s: {first(s): s[first(s)]}), "incomplete"),
    "config not JSON": (lambda d: (d / CONFIG).write_text("{"), CONFIG),
    # the config says which tensors the delta may hold: without it (or with a FIFO) nothing can be checked
    "config missing": (lambda d: (d / CONFIG).unlink(), f"{CONFIG} is missing"),
    "config a FIFO": (lambda d: (d / CONFIG).unlink() or os.mkfifo(d / CONFIG), "not a regular file"),
    "config a folder": (lambda d: (d / CONFIG).unlink() or (d / CONFIG).mkdir(), "not a regular file"),
    "config naming no method": (lambda d: (d / CONFIG).write_text('{"delta_methods": ["bogus"]}'), "delta_methods"),
    "a tensor of the frozen model": (lambda d: rewrite(d, lambda s: {**s, FROZEN: torch.zeros(2)}),
                                     f"{FROZEN} is not trained by its methods (bias"),
}


def test_a_saved_delta_loads_back(saved):
    model, folder = saved
    load_delta(model, read_delta(folder))
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG, WEIGHTS])
    assert json.loads((folder / CONFIG).read_text())["delta_methods"] == ["bias"]


@pytest.mark.parametrize("config, modules", [
    ({}, {"bias"}), ({"use_adapter": True}, {"bias", "adapter"}), ({"use_adapter": False}, {"bias"}),
    ({"attach": "adapter,lora"}, {"bias", "adapter", "lora"})], ids=["plain", "old use_adapter", "old no adapter",
                                                                   "attach"])
def test_a_saved_delta_names_the_modules_to_attach_before_it_loads(config, modules, saved):
    """Its methods, and those its run attached without training: --attach, or an older version's use_adapter."""
    _, folder = saved
    (folder / CONFIG).write_text(json.dumps({"delta_methods": ["bias"], **config}))
    assert set(read_delta(folder).modules) == modules


@pytest.mark.parametrize("case", DAMAGE)
def test_a_delta_that_does_not_fit_is_one_error(case, saved):
    model, folder = saved
    damage, message = DAMAGE[case]
    damage(folder)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with no_hang(), pytest.raises(UserError, match=re.escape(message)) as error:
        load_delta(model, read_delta(folder))
    assert "\n" not in str(error.value)
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())  # nothing half-loaded


def test_run_with_a_corrupt_delta_exits_2(saved, tiny_roberta, data_root, tmp_path, capsys):
    _, folder = saved
    (folder / WEIGHTS).write_bytes(b"not safetensors")
    arguments = {**base_arguments(tiny_roberta, data_root, tmp_path), "delta_path": str(folder)}
    del arguments["do_train"]
    assert run.main(to_argv(arguments)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: delta weights")
    assert not (tmp_path / "log").exists() or (tmp_path / "log").read_text() == ""


def test_a_delta_that_would_overwrite_the_frozen_model_is_refused(saved):
    """A BitFit delta also holding the word embeddings (with their real shape): the base stays as it is."""
    model, folder = saved
    rewrite(folder, lambda s: {**s, FROZEN: torch.ones_like(model.get_parameter(FROZEN))})
    before = model.get_parameter(FROZEN).detach().clone()
    with pytest.raises(UserError, match=f"{FROZEN} is not trained by its methods"):
        load_delta(model, read_delta(folder))
    assert torch.equal(model.get_parameter(FROZEN), before)


@pytest.mark.parametrize("damage", ["a tensor of the frozen model", "config a FIFO", "config missing"])
def test_run_refuses_a_delta_before_the_model_loads(damage, saved, tiny_roberta, data_root, tmp_path, capsys,
                                                    monkeypatch):
    from tests.test_faults import never_build
    _, folder = saved
    DAMAGE[damage][0](folder)
    monkeypatch.setattr("src.models.build_model", never_build)
    arguments = {**base_arguments(tiny_roberta, data_root, tmp_path), "delta_path": str(folder)}
    with no_hang():
        code = run.main(to_argv(arguments))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error: ") and DAMAGE[damage][1] in err
    assert not (tmp_path / "log").exists() and not (tmp_path / "out").exists()
