"""The C runtime on a real split: ids vs Python, labels vs the NumPy reference and JAX, sizes, time.

    python benchmarks/c_runtime.py RUN [--task rt_polarity] [--split test] [--policies int8 fp32]
        [--out DIR] [--json FILE]

RUN is a training workdir (`python -m embbert_jax.train --workdir RUN`) or a saved model. For each policy
the model is exported with `--format c`, built with `make`, and run on every text of the split: the C
token ids against `Tokenizer.encode_batch`, the C labels against the NumPy reference of that policy and the
float JAX model, the accuracy of each against the gold labels, the flash (weights, tokenizer tables) and
RAM (arena, its painted high-water mark, tokenizer buffers) and the C runtime's CPU time per inference
(`clock()` around `embbert_forward`, tokenisation excluded; -O2, one thread).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from embbert_jax import data, export_c, predict, reference


def measure(run: str, task_name: str, split: str, policies: list[str], out: Path) -> dict:
  kind, model_dir = predict.resolve(run)
  if kind != "model":
    raise SystemExit("RUN must be a training workdir or a saved model (the float params are needed)")
  pred = predict.Predictor(model_dir)
  params, cfg = pred.params, pred.cfg
  task = data.load_task(task_name)
  if task.is_pair:
    raise SystemExit(f"{task_name} is a pair task; the C runtime's main reads single texts")
  texts = [t.replace("\n", " ") for t in task.splits[split].text]
  gold = np.asarray(task.splits[split].label)
  ids_py = pred.ids(texts)
  jax_labels = pred.logits(texts).argmax(1)
  result = {"run": str(model_dir), "task": task_name, "split": split, "texts": len(texts),
            "config": cfg.to_dict(), "jax_accuracy": float(np.mean(jax_labels == gold)), "policies": {}}
  lines = ("\n".join(texts) + "\n").encode()
  for policy in policies:
    folder = out / policy
    manifest = export_c.export_c(params, cfg, folder, policy=policy, tokenizer_path=pred.tokenizer.model_path,
                                 label_names=list(task.label_names), add_cls=pred.add_cls)
    subprocess.run(["make", "-s", "-C", str(folder)], check=True)
    binary = str(folder / "embbert")
    got = subprocess.run([binary, "--ids"], input=lines, capture_output=True, check=True).stdout.decode()
    ids_c = [[int(x) for x in line.split()] for line in got.splitlines()]
    ids_ok = sum(c == [int(i) for i in row if i != 0] for c, row in zip(ids_c, ids_py))
    runs = [subprocess.run([binary, "--stats", "--paint", p], input=lines, capture_output=True, check=True)
            for p in ("165", "90")]
    stats = [dict(kv.split("=") for kv in r.stderr.decode().split()) for r in runs]
    c_lines = runs[0].stdout.decode().splitlines()
    c_logits = np.array([[float(x) for x in line.split()[1:]] for line in c_lines], np.float32)
    c_labels = c_logits.argmax(1)
    ref_logits = reference.predict(folder, ids_py)[1]
    ref_labels = ref_logits.argmax(1)
    margin = np.sort(ref_logits, 1)[:, -1] - np.sort(ref_logits, 1)[:, -2]
    c = manifest["c"]
    result["policies"][policy] = {
        "ids_identical": ids_ok, "labels_vs_reference": float(np.mean(c_labels == ref_labels)),
        "labels_vs_jax": float(np.mean(c_labels == jax_labels)),
        "max_abs_logit_diff_vs_reference": float(np.abs(c_logits - ref_logits).max()),
        "smallest_reference_margin": float(margin.min()),
        "c_accuracy": float(np.mean(c_labels == gold)), "reference_accuracy": float(np.mean(ref_labels == gold)),
        "weight_bytes": c["weight_bytes"], "rule_weight_bytes": c["rule_weight_bytes"],
        "arena_bytes": c["arena_bytes"], "rule_activation_bytes": c["arena_vs_rule"]["rule_activation_bytes"],
        "weights_plus_arena_bytes": c["weights_plus_arena_bytes"],
        "high_water_bytes": max(int(s["high_water"]) for s in stats),
        "guard_ok": all(s["guard_ok"] == "1" for s in stats),
        "tokenizer_bytes": c["tokenizer_bytes"], "tokenizer_ram_bytes": c["tokenizer_ram_bytes"],
        "us_per_inference": float(np.mean([float(s["us_per_inference"]) for s in stats])),
        "mean_ids_per_text": float(np.mean([len(x) for x in ids_c])),
    }
  return result


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("run")
  ap.add_argument("--task", default="rt_polarity")
  ap.add_argument("--split", default="test")
  ap.add_argument("--policies", nargs="+", default=["int8", "fp32"])
  ap.add_argument("--out", default=None, help="export folders (default: a temporary directory)")
  ap.add_argument("--json", default=None, help="write the result here too")
  args = ap.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    res = measure(args.run, args.task, args.split, args.policies, Path(args.out or tmp))
  text = json.dumps(res, indent=1)
  if args.json:
    data.write_text_atomic(Path(args.json), text + "\n")
  print(json.dumps({k: v for k, v in res.items() if k != "config"}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
