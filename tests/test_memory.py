"""Parameter counts and memory figures against the spec, and the budget parser."""

import time

import jax
import pytest

from embbert_jax import configs, describe, memory, models

# Spec sections 1.6, 3 and 2: exact parameter counts and the fp32 totals of the rule.
SPEC_PARAMS = {"embbert": 357_506, "nano": 65_986, "big": 7_307_778}
SPEC_TOTAL_MB = {"nano": 0.657, "embbert": 1.954, "big": 39.72, "bert": 2.007, "nanobert": 1.973,
                 "nanobert_efficient": 1.984}


def spec_formula(c):
  """Spec 1.6, written out literally for EmbBERT configs."""
  V, L, d, r, k, N, C = c.vocab_size, c.max_len, c.hidden, c.embed_dim, c.conv_kernel, c.num_layers, c.num_labels
  di = int(d * c.conv_expansion)
  return (V * r + L * r + 2 * r * d + 3 * d) + N * (5 * d + 2 * (d * d + d) + di * (k + 1) + di * d + d) + (d * C + C)


@pytest.mark.parametrize("name,count", SPEC_PARAMS.items())
def test_spec_parameter_counts(name, count):
  assert memory.num_params(configs.get_preset(name)) == count


@pytest.mark.parametrize("name", configs.EMBBERT_PRESETS)
def test_spec_formula_matches_shapes(name):
  c = configs.get_preset(name)
  assert memory.num_params(c) == spec_formula(c)


@pytest.mark.parametrize("overrides", [dict(vocab_size=1000, max_len=64, hidden=48, embed_dim=8, conv_expansion=3,
                                            conv_kernel=5, num_layers=3, num_labels=7),
                                       dict(hidden=32, conv_expansion=2, num_labels=1)])
def test_spec_formula_on_other_configs(overrides):
  c = configs.model_config(**overrides)
  assert memory.num_params(c) == spec_formula(c)


def test_label_readout_adds_one_weight_per_class_and_only_that():
  plain = configs.get_preset("embbert", num_labels=3)
  with_readout = configs.get_preset("embbert", num_labels=3, label_readout=True)
  assert memory.num_params(with_readout) == memory.num_params(plain) + 3
  assert memory.num_params(with_readout, "pretrain") == memory.num_params(plain, "pretrain")  # classifier only
  for policy in ("fp32", "int8"):
    a, b = memory.estimate(plain, policy), memory.estimate(with_readout, policy)
    extra = 3 * memory.get_policy(policy).other  # priced as the other vectors (biases, norms): 4 / 2 bytes
    assert b.activation_bytes == a.activation_bytes and b.weight_bytes - a.weight_bytes == extra


def _all_configs():
  """Every preset, every ablation switch, and the pre-training task."""
  out = [(n, configs.get_preset(n), "classify") for n in configs.PRESETS]
  out.append(("embbert/pretrain", configs.get_preset("embbert"), "pretrain"))
  for flag in (dict(use_attention=False), dict(use_conv=False), dict(residual=True), dict(aggregation="sum"),
               dict(embedder="standard"), dict(head="rms_pool", num_labels=5), dict(conv_expansion=2),
               dict(head="mean_pool", label_readout=True), dict(embedder="standard", label_readout=True, num_labels=1)):
    out.append((f"embbert/{flag}", configs.get_preset("embbert", **flag), "classify"))
  return out


@pytest.mark.parametrize("name,cfg,task", _all_configs(), ids=lambda x: x if isinstance(x, str) else "")
def test_closed_form_matches_initialised_pytree(name, cfg, task):
  abstract = jax.eval_shape(lambda: models.init_params(cfg, jax.random.key(0), task))
  from_tree = sorted((s.path, s.shape) for s in memory.pytree_specs(abstract))
  from_config = sorted((s.path, s.shape) for s in memory.param_shapes(cfg, task))
  assert from_tree == from_config
  assert sum(s.size for s in memory.pytree_specs(abstract)) == memory.num_params(cfg, task)


@pytest.mark.parametrize("name,mb", SPEC_TOTAL_MB.items())
def test_spec_memory_totals(name, mb):
  total = memory.total_bytes(configs.get_preset(name), "fp32")
  assert round(total / 1e6, 3 if mb < 10 else 2) == mb


def test_headline_breakdown():
  r = memory.estimate(configs.get_preset("embbert"), "fp32")
  assert r.weight_bytes == 4 * 357_506 and r.activation_values == 256 ** 2 + 2 * 256 * 128
  assert r.total_bytes == 1_954_312 and r.policy == "fp32"


def test_int8_policy_reconstructs_paper():
  r = memory.estimate(configs.get_preset("embbert"), "int8")
  # Spec: Dense kernels int8 + other params fp16 + activations fp16 = about 776 kB; the per-channel fp16
  # scales (1,794 output channels) add 3.6 kB; the paper reports 781 kB.
  assert r.total_bytes - r.weight_bytes_by_class["scales"] == 776_196
  assert r.weight_bytes_by_class["scales"] == 2 * 1_794
  assert abs(r.total_bytes - 781_000) < 5_000
  full = memory.estimate(configs.get_preset("embbert"), "int8_full")
  assert full.total_bytes < r.total_bytes


def test_ablations_change_memory_in_the_right_direction():
  base = memory.estimate(configs.get_preset("embbert"))
  no_attn = memory.estimate(configs.get_preset("embbert", use_attention=False))
  assert no_attn.params == base.params - 4 * (2 * (128 * 128 + 128) + 4 * 128)
  assert no_attn.activation_values < base.activation_values
  assert memory.estimate(configs.get_preset("embbert", residual=True)).activation_values > base.activation_values


@pytest.mark.parametrize("text,expected", [
    ("2MB", 2_000_000), ("2 MB", 2_000_000), ("781kB", 781_000), ("1.5MiB", 1_572_864), ("500KiB", 512_000),
    ("2000000", 2_000_000), ("2mb", 2_000_000), ("0.5 GB", 500_000_000), (" 3 B ", 3), (2_000_000, 2_000_000)])
def test_budget_parser_accepts(text, expected):
  assert memory.parse_budget(text) == expected


@pytest.mark.parametrize("text", ["-1MB", "0", "0MB", "2 furlongs", "MB", "", "1.2.3MB", "2 M B", None, "nan"])
def test_budget_parser_rejects_with_the_accepted_forms(text):
  with pytest.raises(memory.BudgetError, match="2MB, 2 MB, 781kB"):
    memory.parse_budget(text)


@pytest.mark.parametrize("text", ["1e400MB", "1e300MB", "1e99999999MB", "1e-99999999MB", "2TB", "1.5e3GB",
                                  "9" * 5000 + "MB", "1e13"])
def test_budget_parser_bounds_huge_and_tiny_budgets_quickly(text):
  start = time.perf_counter()
  with pytest.raises(memory.BudgetError) as err:
    memory.parse_budget(text)
  assert time.perf_counter() - start < 0.1
  message = str(err.value)
  assert "\n" not in message and len(message) < 400 and ("above the largest" in message or "one byte" in message)


def test_budget_parser_reads_exponents():
  assert memory.parse_budget("2e0MB") == 2_000_000 and memory.parse_budget("1e-3GB") == 1_000_000
  assert memory.parse_budget("1TB") == memory.MAX_BUDGET


def test_format_bytes():
  assert memory.format_bytes(1_954_312) == "1.954 MB"
  assert memory.format_bytes(781_000) == "781 kB"
  assert memory.format_bytes(12) == "12 B"


def test_compiled_memory_is_close_to_estimate():
  c = configs.get_preset("embbert")
  cm = describe.compiled_memory(c)
  assert cm["argument"] >= 4 * 357_506  # the weights are arguments of the program
  assert 0.8 < cm["total"] / memory.total_bytes(c) < 1.5
