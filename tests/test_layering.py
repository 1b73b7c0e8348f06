"""The modules' layering, read off the import lines of src/, tools/ and run.py (function-local imports too):
no module reaches itself through its imports, the job and engine modules sit below the launcher that drives
them, src/ never imports a tool, and no tool imports another.

`python -m tests.test_layering` prints the layers: each module one floor above the highest it imports.
"""
import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
# Modules that the launcher (src/launch.py) drives: they never import it, directly or through another module.
BELOW_THE_LAUNCHER = ("src.engines", "src.jobs")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> Dict[str, Path]:
    paths = [*ROOT.glob("src/**/*.py"), *ROOT.glob("tools/*.py"), ROOT / "run.py"]
    return {module_name(path): path for path in paths}


def imports_of(path: Path, modules: Set[str]) -> Set[str]:
    """The project modules that a file imports anywhere in it: `from src.delta import adapter` is
    src.delta.adapter, `from src.delta import METHODS` is src.delta."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> Dict[str, Set[str]]:
    """module -> the project modules it imports."""
    modules = project_modules()
    return {name: imports_of(path, set(modules)) - {name} for name, path in modules.items()}


def reachable(graph: Dict[str, Set[str]], start: str) -> Set[str]:
    """The modules that importing `start` imports, directly or through others."""
    seen, todo = set(), list(graph[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen


def layers(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The modules by floor: floor 0 imports no project module, each other module sits one floor above the
    highest module it imports. Modules in a cycle share a floor (listed as one 'a | b' entry)."""
    reach = {name: reachable(graph, name) for name in graph}
    group = {name: " | ".join(sorted({name} | {m for m in reach[name] if name in reach[m]})) for name in graph}
    below = {}
    for name in graph:
        below.setdefault(group[name], set()).update(group[m] for m in graph[name] if group[m] != group[name])
    floor: Dict[str, int] = {}

    def floor_of(entry):
        if entry not in floor:
            floor[entry] = 1 + max((floor_of(other) for other in below[entry]), default=-1)
        return floor[entry]
    result: List[List[str]] = []
    for entry in sorted(below):
        number = floor_of(entry)
        result += [[] for _ in range(number + 1 - len(result))]
        result[number].append(entry)
    return result


GRAPH = import_graph()


def test_no_module_imports_itself_through_others():
    cycles = sorted(name for name in GRAPH if name in reachable(GRAPH, name))
    assert cycles == [], f"modules in an import cycle: {cycles}; floors: {layers(GRAPH)}"


def test_jobs_and_engines_never_import_the_launcher():
    """Engines run jobs (src/jobs.py: the job, its guard, its files); the launcher drives the engines."""
    below = [name for name in BELOW_THE_LAUNCHER if name in GRAPH]
    assert "src.engines" in below
    assert [name for name in below if "src.launch" in reachable(GRAPH, name)] == []


def test_src_never_imports_a_tool_and_no_tool_another():
    wrong = sorted((name, other) for name, imported in GRAPH.items() for other in imported
                   if other.startswith("tools.") and (name.startswith("src") or name.startswith("tools.")))
    assert wrong == []


def test_the_graph_sees_function_local_imports(tmp_path):
    """Read off the source, not off a run: an import inside a function counts as much as one at the top."""
    path = tmp_path / "module.py"
    path.write_text("import json\nimport src.errors\n\n\ndef f():\n    from src.delta import METHODS, adapter\n")
    assert imports_of(path, set(GRAPH)) == {"src.errors", "src.delta", "src.delta.adapter"}
    assert "src.engines" in GRAPH["tools.launch"] and "src.multirun" in GRAPH["run"]


if __name__ == "__main__":
    for number, floor in enumerate(layers(GRAPH)):
        print(f"{number}: {' '.join(floor)}")
