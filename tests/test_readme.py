"""The README's set-up commands and quick example stay true."""

import pathlib
import re
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_second():
    commands = [b.strip() for b in _blocks("bash")]
    assert len(commands) == 2, commands
    install_and_run, install_and_test = commands
    assert "scripts/landscape.py" in install_and_run
    assert "pytest" in install_and_test
    assert install_and_test in (ROOT / ".ci" / "run").read_text()


def test_quick_example_runs_and_hand_equals_autodiff(capsys):
    code = _blocks("python")[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    diffs = namespace["jax"].tree.leaves(
        namespace["jax"].tree.map(
            lambda a, b: np.max(np.abs(a - b)), namespace["grads"], namespace["grads_ad"]
        )
    )
    assert max(diffs) < 1e-6
    assert "'w'" in capsys.readouterr().out


def test_training_example_reaches_its_stated_accuracy(capsys):
    code = _blocks("python")[1]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["result"].history["test_accuracy"][-1] >= 0.95


def test_seed_example_script_reports_every_value_equal():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "seed_example.py")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for number in ("3.5", "1.125", "6.58", "4.92", "1.1", "1.9", "0.8", "1.7"):
        assert number in result.stdout
    assert "MISMATCH" not in result.stdout
    assert "Every hand-derived value equals autodiff." in result.stdout


def test_population_example_runs_after_the_training_example(capsys):
    namespace: dict = {}
    for code in _blocks("python")[1:3]:  # the training example defines model and ds
        exec(compile(code, "README.md", "exec"), namespace)
    pop = namespace["pop"]
    assert pop.history["test_accuracy"].shape == (6, 5)
    assert all(m is None for m in pop.diverged)
    assert len(capsys.readouterr().out.strip().splitlines()[-1].split()) >= 6
