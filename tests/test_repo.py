"""The README and CI promise the same test command."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
  readme = (ROOT / "README.md").read_text()
  ci = (ROOT / ".ci" / "run").read_text()
  block = re.search(r"```bash\n(.*?)```", readme.split("## Quick start", 1)[1], re.S).group(1)
  test_cmd = [line for line in block.splitlines() if "pytest" in line]
  assert test_cmd and test_cmd[0].strip() in ci
