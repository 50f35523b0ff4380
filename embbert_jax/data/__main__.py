"""`python -m embbert_jax.data`: builds (or finds) the offline pre-training corpus and prints its card."""

import sys

from embbert_jax.data.corpus import main

if __name__ == "__main__":
  sys.exit(main())
