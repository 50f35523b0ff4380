"""The search spaces that ship with the package (`python -m embbert_jax.sweep --space NAME`); see space.py."""
