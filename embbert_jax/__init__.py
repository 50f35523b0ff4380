"""embbert_jax: tiny BERT-style encoders under a memory budget (EmbBERT in JAX/Flax)."""

__version__ = "0.1.0"
