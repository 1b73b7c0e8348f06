"""The delta registry is the one place that lists methods: no tool, script or module re-lists them."""
import ast
import dataclasses
import re
import sys

import pytest

from src.arguments import ModelArguments, argument_defaults, with_method_options
from src.delta import METHODS, DeltaMethod, Stages, adapterhub, combination_title, lr_grid, paper_combinations, registry
from src.errors import UserError
from tests.conftest import ROOT

NAMES = set(METHODS)
SOURCES = sorted([*ROOT.glob("tools/*.py"), *ROOT.glob("src/**/*.py"), *ROOT.glob("run_*.sh")])
REGISTRY = ROOT / "src" / "delta" / "__init__.py"


def listed_names_in_python(path):
    """Method names that stand together in one list/tuple/set/dict literal of the code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            names = [i.value for i in items if isinstance(i, ast.Constant) and i.value in NAMES]
            if len(names) >= 2:
                found.append((node.lineno, names))
    return found


def listed_names_in_shell(path):
    """Lines of shell code (comments aside) naming two or more methods."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        names = re.findall(r"(?<![\w-])(" + "|".join(map(re.escape, NAMES)) + r")(?![\w-])", code)
        if len(set(names)) >= 2:
            found.append((number, names))
    return found


@pytest.mark.parametrize("path", [p for p in SOURCES if p != REGISTRY], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_hard_coded_list_of_method_names(path):
    found = listed_names_in_shell(path) if path.suffix == ".sh" else listed_names_in_python(path)
    assert found == [], f"{path.relative_to(ROOT)} lists methods itself: {found}"


def test_the_registry_gives_the_papers_columns_and_grids():
    assert [combination_title(c) for c in paper_combinations()] == [
        "Adapter", "BitFit", "BitFit+Adapter", "Prompt", "Prompt+Adapter", "Prompt+BitFit", "Prompt+BitFit+Adapter"]
    assert lr_grid(["prompt"]) == (1e-2, 3e-3, 1e-3, 3e-4) and lr_grid(["bias"]) == (3e-3, 1e-3, 3e-4, 1e-4)
    assert lr_grid(["adapter"]) == lr_grid(["prompt,bias"]) == (1e-3, 3e-4, 1e-4, 3e-5)
    assert lr_grid(["prompt", "bias"], "mulstage") == (1e-2, 3e-3, 1e-3, 3e-4)
    assert lr_grid(["lora"], "fulldata") == (1e-2, 1e-3, 1e-4, 1e-5)


def test_each_methods_options_are_run_py_arguments_of_the_delta_group():
    """run.py's method options come from the registry entries' options dataclasses; the earlier ones keep
    their names and defaults (old commands, argument files and records mean the same)."""
    fields = {f.name: f for f in dataclasses.fields(ModelArguments)}
    declared = [f for m in METHODS.values() if m.options for f in dataclasses.fields(m.options)]
    assert {f.name for f in declared} >= {"prompt_num", "adapter_reduction_factor", "lora_r", "prefix_length"}
    for option in declared:
        field = fields[option.name]
        assert (field.default, field.metadata["help"], field.metadata["group"], field.metadata.get("allowed")) == (
            option.default, option.metadata["help"], "delta", option.metadata.get("allowed")), option.name
    defaults = {"prompt_num": 10, "adapter_reduction_factor": 16, "lora_r": 8, "lora_alpha": 8}
    assert {name: argument_defaults()[name] for name in defaults} == defaults


def test_an_option_named_like_another_argument_is_refused():
    @dataclasses.dataclass
    class Arguments:
        prompt_num: int = 3
    with pytest.raises(TypeError, match="prompt_num"):
        with_method_options(Arguments)


def test_stages_have_one_spelling():
    stages = Stages.parse(["bias, prompt", "adapter"])
    assert str(stages) == "prompt,bias adapter" and Stages.parse(str(stages)) == stages
    assert stages.specs == ["prompt,bias", "adapter"] and stages.methods == ["prompt", "bias", "adapter"]
    assert [list(stage) for stage in stages] == [["prompt", "bias"], ["adapter"]]
    with pytest.raises(UserError, match="--training_params is empty"):
        Stages.parse("")


@pytest.mark.parametrize("change, message", [
    (dict(name="bias"), "same name: bias"), (dict(label="BF"), "same label: BF"),
    (dict(title="BitFit"), "same title: BitFit"), (dict(adapters_method="houlsby"), "unknown adapters method type")])
def test_the_registry_refuses_a_repeated_name_label_or_title_and_an_unknown_adapters_type(change, message):
    """As peft's register_peft_method refuses a name twice: a second entry would silently replace the first."""
    new = DeltaMethod(**{"name": "new", "label": "NW", "title": "New", "selects": lambda name: False, **change})
    assert registry([*METHODS.values(), DeltaMethod("new", "NW", "New", lambda name: False)])
    with pytest.raises(ValueError, match=message):
        registry([*METHODS.values(), new])


def test_each_adapters_type_is_the_one_of_its_config_class():
    """A method's `adapters` method type (stated beside the config class its module builds) is that config's
    type for the library; the known types are the library's."""
    from adapters.interface import AdapterMethod
    assert adapterhub.METHOD_TYPES == {value for name, value in vars(AdapterMethod).items()
                                       if not name.startswith("_") and isinstance(value, str)}
    through_adapters = [m for m in METHODS.values() if m.adapters_method]
    assert {m.name for m in through_adapters} == {"adapter", "lora", "prefix"}
    for method in through_adapters:
        module = sys.modules[method.attach.__module__]
        assert AdapterMethod.get_from_config(module.config(method.options())) == [method.adapters_method], method.name
