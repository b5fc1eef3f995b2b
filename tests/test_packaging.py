"""The install story stays consistent: pyproject, environment.yml, Makefile and CI agree."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENV = yaml.safe_load((ROOT / "environment.yml").read_text())
USER_PACKAGES = {"jupyterlab", "torch", "transformers", "trl", "peft", "matplotlib", "pandas",
                 "ipywidgets", "papermill"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()


def _all_requirements() -> list[str]:
    project = PYPROJECT["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += [r for r in extra if not r.startswith("aad-kit")]
    return reqs


def test_layout_the_user_asked_for_exists():
    for path in ["notebooks", "aad_kit", "data", "environment.yml", "tests", "README.md",
                 "pyproject.toml", ".ci/run", "Makefile"]:
        assert (ROOT / path).exists(), path


def test_every_package_the_user_named_is_declared():
    declared = {_name(r) for r in _all_requirements()}
    assert USER_PACKAGES <= declared, USER_PACKAGES - declared


def test_torch_is_pinned_exactly_and_identically_everywhere():
    torch_reqs = [r for r in _all_requirements() if _name(r) == "torch"]
    assert len(torch_reqs) == 1 and re.fullmatch(r"torch==[\d.]+", torch_reqs[0]), torch_reqs
    pin = torch_reqs[0]
    pip_section = next(d["pip"] for d in ENV["dependencies"] if isinstance(d, dict))
    assert pin in pip_section
    assert pin in (ROOT / "Makefile").read_text()


def test_environment_yml_installs_the_package_with_all_extras():
    pip_section = next(d["pip"] for d in ENV["dependencies"] if isinstance(d, dict))
    assert "-e .[all]" in pip_section
    extras = PYPROJECT["project"]["optional-dependencies"]
    # "bench" is an alias of "llamacpp" (the default CPU engine, in "all" since issue 12)
    wanted = [k for k in extras if k not in ("all", "bench")]
    assert set(extras["all"]) == {f"aad-kit[{','.join(wanted)}]"} and "llamacpp" in wanted
    assert extras["bench"] == ["aad-kit[llamacpp]"]
    makefile = (ROOT / "Makefile").read_text()
    (pin,) = extras["llamacpp"]
    assert "bench" in makefile and f"--no-cache-dir {pin}" in makefile  # compiled for this CPU


def test_environment_python_satisfies_requires_python():
    py = next(d for d in ENV["dependencies"] if isinstance(d, str) and d.startswith("python"))
    env_minor = tuple(int(x) for x in py.split("=")[1].split(".")[:2])
    floor = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert env_minor >= tuple(int(x) for x in floor.split(".")[:2])


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in readme and "make test" in ci
    assert "make demo" in readme


def test_console_script_is_importable():
    target = PYPROJECT["project"]["scripts"]["aad-kit"]
    module, func = target.split(":")
    mod = __import__(module, fromlist=[func])
    assert callable(getattr(mod, func))


def test_cli_models_subcommand_is_wired(capsys):
    from aad_kit.cli import main

    assert main(["models", "list"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out


def test_every_third_party_import_is_declared():
    """A clean install must not depend on packages that only arrive transitively."""
    import ast
    import sys

    aliases = {"yaml": "pyyaml", "IPython": "ipykernel", "jupyter_client": "jupyter-client",
               "llama_cpp": "llama-cpp-python"}
    declared = {_name(r) for r in _all_requirements()} | {"pytest"}
    local = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}  # benchmark scripts import each other
    missing = {}
    for folder in ("aad_kit", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in ("aad_kit", "tests", "benchmarks") or top in local:
                        continue
                    if aliases.get(top, top).lower().replace("_", "-") not in {
                        d.replace("_", "-") for d in declared
                    }:
                        missing.setdefault(top, str(path.relative_to(ROOT)))
    assert not missing, missing
