"""The README's two opening commands are what CI and a new user run: keep them true."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_the_readmes_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r"TEST_CMD='(.+)'", ci).group(1)
    assert readme_commands()[1] == test_cmd


def test_readme_opens_with_setup_and_main_job_on_the_embedded_default():
    setup_and_run = readme_commands()[0]
    assert setup_and_run.startswith("python3 -m venv .venv && .venv/bin/pip install")
    script = setup_and_run.split("&&")[-1].split()[-1]
    assert (ROOT / script).exists(), script
