"""The docs cannot go stale: every `python run.py ...` command in README.md and docs/ composes and names options
that exist, commands marked `<!-- fails -->` fail in one sentence, the generated config reference is current,
the extending guide's worked example runs, and the README keeps its size and section order."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from pydantic import Field

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "experiments" not in p.parts)]
FAILS_MARK = "<!-- fails -->"
# Words in commands that stand for the user's own paths.
PLACEHOLDERS = re.compile(r"\b(RUN|DIR|SWEEP_DIR|FILE|DAY|TIME)\b|\.\.\.")
COMMAND = re.compile(r"^(?:\.venv/bin/)?python run\.py\b")


def commands(page: Path) -> list[tuple[str, bool]]:
    """(command, meant to fail) for each `python run.py` line of the page's code blocks and inline code."""
    found, in_block, fails_next, block_fails = [], False, False, False
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("```"):
            in_block = not in_block
            block_fails = in_block and fails_next
            fails_next = False
        elif line == FAILS_MARK:
            fails_next = True
        elif in_block:
            while line.endswith("\\") and i + 1 < len(lines):  # a command continued on the next line
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            text = line.split(" # ")[0].strip() if " # " in line else line
            if COMMAND.match(text):
                found.append((text, block_fails))
        else:
            found += [(span, False) for span in re.findall(r"`((?:\.venv/bin/)?python run\.py[^`]*)`", line)
                      if "..." not in span.split("run.py", 1)[1][:5]]
        i += 1
    return found


ALL = [(page.relative_to(ROOT).as_posix(), cmd, fails) for page in PAGES for cmd, fails in commands(page)]


def overrides_of(cmd: str, tmp: Path) -> tuple[list[str], bool]:
    """The command's overrides with placeholders filled, and whether it is a multirun."""
    args = shlex.split(PLACEHOLDERS.sub(str(tmp / "x"), cmd))[2:]
    multirun = "-m" in args or "--multirun" in args
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--cfg", "--info", "-c", "-i"):
            skip = True  # their value (job, defaults) is a mode, not an override
            continue
        if arg.startswith("-"):
            continue
        out.append(arg)
    return out, multirun


def composable(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Overrides to compose (a sweep's first value) and the keys of Optuna search spaces (checked to exist)."""
    parser = OverridesParser.create()
    plain, searched = [], []
    for text, override in zip(overrides, parser.parse_overrides(overrides), strict=True):
        if not override.is_sweep_override():
            plain.append(text)
            continue
        try:
            first = next(iter(override.sweep_string_iterator()))
            plain.append(f"{override.get_key_element()}={first}")
        except Exception:  # interval(...) and tag(log, ...): Optuna's search space, not a list of values
            searched.append(override.get_key_element())
    return plain, searched


@pytest.fixture(scope="module")
def hydra_conf():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def test_the_pages_hold_commands():
    assert len(ALL) >= 60, f"only {len(ALL)} commands found: is the extraction broken?"
    assert sum(fails for _, _, fails in ALL) >= 2


@pytest.mark.parametrize(("page", "cmd"), [(p, c) for p, c, fails in ALL if not fails])
@pytest.mark.slow
def test_command_composes(hydra_conf, tmp_path, page, cmd):
    overrides, multirun = overrides_of(cmd, tmp_path)
    plain, searched = composable(overrides)
    cfg = compose(config_name="config", overrides=plain, return_hydra_config=True)
    for text in plain:
        key = text.split("=", 1)[0]
        if key.startswith(("+", "~")):
            continue
        choices = cfg.hydra.runtime.choices
        if key in choices:  # a group: the option picked is the one the command names
            assert choices[key] == text.split("=", 1)[1], f"{page}: {cmd}: {key} is {choices[key]}"
            continue
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", f"{page}: {cmd}: {key} does not exist"
    for key in searched:
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", f"{page}: {cmd}: {key} does not exist"
    if not multirun:
        assert not any(p.is_sweep_override() for p in OverridesParser.create().parse_overrides(overrides)), \
            f"{page}: {cmd} sweeps without -m"


@pytest.mark.slow
@pytest.mark.parametrize(("page", "cmd"), [(p, c) for p, c, fails in ALL if fails])
def test_command_meant_to_fail_fails_in_one_sentence(tmp_path, page, cmd):
    args = shlex.split(PLACEHOLDERS.sub(str(tmp_path / "x"), cmd))[2:]
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    run = subprocess.run([sys.executable, "run.py", *args, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 2, f"{page}: {cmd} exited {run.returncode}:\n{output[-2000:]}"
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and errors[0].rstrip().endswith("."), errors
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training


@pytest.mark.slow
def test_config_reference_is_current():
    run = subprocess.run([sys.executable, "docs/gen_config_reference.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr


def test_config_reference_shows_annotated_bounds_and_descriptions():
    sys.path.insert(0, str(ROOT / "docs"))
    from gen_config_reference import describe_type

    assert describe_type(Annotated[int, Field(ge=1, description="images per batch")]) == "int >= 1 — images per batch"
    assert describe_type(Annotated[float, Field(ge=0, lt=1)]) == "float in [0, 1)"
    assert describe_type(Annotated[Annotated[float, Field(gt=0, description="a rate")] | None,
                                   Field(description="null: off")]) == "float > 0 | None — null: off"
    assert describe_type(Annotated[float | None, Field(gt=0)]) == "float > 0 | None"
    assert describe_type(tuple[Annotated[float, Field(ge=0, le=1)], str]) == "tuple[float in [0, 1], str]"
    assert describe_type(Literal["auto"] | bool) == "one of 'auto' | bool"


class Annotated_:
    """A constructor typed as the redesign types them: the reference reads bounds and descriptions from it."""

    def __init__(self, batch_size: Annotated[int, Field(ge=1, description="images per batch")] = 64,
                 decay: Annotated[float, Field(ge=0, lt=1)] = 0.99, name: str = "x"):
        pass


def test_config_reference_reads_a_constructors_signature():
    sys.path.insert(0, str(ROOT / "docs"))
    from gen_config_reference import signature_types

    assert signature_types("test_docs.Annotated_") == {"batch_size": "int >= 1 — images per batch",
                                                       "decay": "float in [0, 1)", "name": "str"}
    assert signature_types("no_such_module.Thing") == {}


class Constant(torch.nn.Module):
    """A sampler whose sample i is the constant image (i / 100) - 1."""

    def generate(self, indices, seed=0, labels=None):
        values = torch.as_tensor(indices, dtype=torch.float32) / 100 - 1
        return values.view(-1, 1, 1, 1).expand(-1, 1, 2, 2)


@pytest.mark.slow
def test_extending_worked_example_runs():
    text = (ROOT / "docs" / "extending.md").read_text()
    block = text.split("<!-- runs in tests/test_docs.py -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, "docs/extending.md", "exec"), namespace)
    from gdm.evaluation.context import Evaluation
    from gdm.models.base import Samples

    Samples.register(Constant)
    metric = namespace["MeanBrightness"](num_samples=100)
    metric.check(Constant(), None, "digits")
    ev = Evaluation(model=Constant(), data=None, features=torch.nn.Identity(), cache=None,
                    device=torch.device("cpu"), batch_size=30)
    result = metric(ev)
    assert result.values["val/brightness"] == pytest.approx(sum(i / 100 - 1 for i in range(100)) / 100)
    assert result.protocols["val/brightness"]["num_generated"] == 100


def test_readme_is_short_and_in_order():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 12 * 1024
    sections = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert sections == ["Install and first run", "Everyday commands", "Models and data", "Results at a glance",
                        "Code map", "Tests", "Documentation"]


def test_readme_setup_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install --quiet -e ".[dev]"' in ci and ".venv/bin/python -m pytest" in ci
    readme = (ROOT / "README.md").read_text()
    assert 'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"' in readme
    assert ".venv/bin/python -m pytest" in readme
