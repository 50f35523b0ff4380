"""benchmarks/device_report.py: one command for the Performance rows, robust to a part that fails or runs over;
and benchmarks/machine.py, the header every benchmark prints."""

import sys

import jax

from benchmark_scripts import load


def _report(monkeypatch, tmp_path, parts: dict, *flags: str) -> tuple[int, str]:
  bench = load("device_report")
  monkeypatch.setattr(bench, "QUICK", parts)
  monkeypatch.setattr(bench, "FULL", parts)
  monkeypatch.setattr(bench, "PROBE", "print('Some CPU, 2 cores; jax 0, backend cpu: 1 x cpu'); print('cpu'); print(False)")
  out = tmp_path / "report.md"
  monkeypatch.setattr(sys, "argv", ["device_report.py", "--quick", "--out", str(out), "--parts", *parts, *flags])
  return bench.main(), out.read_text()


def test_every_part_is_recorded_and_one_that_runs_over_keeps_the_others(monkeypatch, tmp_path):
  parts = {"step": ["-c", "print('| nano | 32 | 1.0 |')"],
           "grouped": ["-c", "import time; print('started', flush=True); time.sleep(30)"],
           "broken": ["-c", "raise SystemExit('bad flag')"],
           "torch": ["-c", "print('never')"]}
  code, text = _report(monkeypatch, tmp_path, parts, "--timeout", "3")
  assert code == 1  # a part failed
  assert text.splitlines()[2] == "Some CPU, 2 cores; jax 0, backend cpu: 1 x cpu"
  step, grouped, broken, torch = text.split("\n## ")[1:]
  assert "exit 0" in step and "| nano | 32 | 1.0 |" in step
  assert "ran over --timeout 3 s" in grouped and "started" in grouped  # what it printed before it was stopped
  assert "exit 1" in broken and "bad flag" in broken
  header, body = torch.split("\n", 1)
  assert header.startswith("torch:") and "not run: torch is not installed" in body and "never" not in body


def test_a_report_of_parts_that_pass_exits_0(monkeypatch, tmp_path):
  code, text = _report(monkeypatch, tmp_path, {"step": ["-c", "print('row')"]})
  assert code == 0 and "exit 0" in text and "row" in text


def test_machine_line_names_cpu_cores_backend_and_devices():
  machine = load("machine")
  line = machine.describe()
  assert f"{machine.cores()} cores" in line and f"jax {jax.__version__}" in line
  assert f"backend {jax.default_backend()}: {jax.device_count()} x " in line
  assert machine.matmul_size() == (2048 if jax.default_backend() == "cpu" else 8192)
  assert machine.matmul_gflops(64, reps=2) > 0
