"""The studies that ship with the package (`python -m embbert_jax.experiment NAME`); see study.py."""
