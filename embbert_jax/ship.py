"""Maintainers: put pre-trained weights and tokenizers into the package, where a fresh install finds them.

    python -m embbert_jax.ship encoder runs/pre --name embbert-v8192   # -> embbert_jax/pretrained/embbert-v8192/
    python -m embbert_jax.ship tokenizers                              # -> embbert_jax/tokenizers/ (2048, 8192, 16384)
    python -m embbert_jax.ship vectors                                 # -> embbert_jax/wordvecs/ (the same three)

`encoder` (pretrained.make): the encoder of a finished standalone pre-training (its workdir or model/
folder) as fp16 params.npz + config.json + manifest.json (the pre-training's manifest, the params' sha256),
with its tokenizer copied unless it is a shipped one. `tokenizers` (tokenizer.ship_default_tokenizers):
the default corpus's cached tokenizers (the corpus built and the tokenizers trained first if needed) with
index.json, which records the corpus recipe they are for. `vectors` (wordvecs.ship): the token vectors of
the shipped tokenizers (built from the default corpus if not cached) with index.json. Each prints what it wrote and the package's
shipped bytes against the 25 MB budget.
"""

from __future__ import annotations

import json
import shlex
import sys

from embbert_jax import cli, data, pretrained, wordvecs
from embbert_jax import tokenizer as tok_lib


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else list(argv)
  ap = cli.parser("python -m embbert_jax.ship", __doc__.splitlines()[0])
  sub = ap.add_subparsers(dest="what", required=True)
  enc = sub.add_parser("encoder", help="ship a finished pre-training's encoder (fp16)",
                       formatter_class=cli.HelpFormatter)
  enc.add_argument("source", help="a python -m embbert_jax.pretrain workdir or its model/ folder")
  enc.add_argument("--name", required=True, help="folder name under embbert_jax/pretrained/, e.g. embbert-v8192")
  enc.add_argument("--root", default=None, help="write under this folder instead of the package (staging)")
  tok = sub.add_parser("tokenizers", help="ship the default corpus's tokenizers", formatter_class=cli.HelpFormatter)
  tok.add_argument("--vocab", type=cli.at_least(5), nargs="+", default=list(tok_lib.SHIPPED_VOCABS),
                   help="vocabulary sizes")
  tok.add_argument("--cache-dir", default=None, help="cache folder (default: $EMBBERT_JAX_CACHE, else "
                   "~/.cache/embbert_jax)")
  tok.add_argument("--dest", default=None, help="write here instead of the package's tokenizers/ (staging)")
  vec = sub.add_parser("vectors", help="ship the token vectors of the shipped tokenizers",
                       formatter_class=cli.HelpFormatter)
  vec.add_argument("--vocab", type=cli.at_least(5), nargs="+", default=list(tok_lib.SHIPPED_VOCABS),
                   help="vocabulary sizes (each must have a shipped tokenizer)")
  vec.add_argument("--cache-dir", default=None, help="cache folder (default: $EMBBERT_JAX_CACHE, else "
                   "~/.cache/embbert_jax)")
  vec.add_argument("--dest", default=None, help="write here instead of the package's wordvecs/ (staging)")
  args = ap.parse_args(argv)
  command = "python -m embbert_jax.ship " + shlex.join(argv)
  try:
    if args.what == "encoder":
      folder = pretrained.make(args.source, args.name, args.root, command=command)
      m = pretrained.manifest(folder)
      print(json.dumps({k: m[k] for k in ("name", "params_sha256", "params_bytes", "steps",
                                           "fp16_max_abs_error")}, indent=1))
      print(f"wrote {folder}")
    elif args.what == "vectors":
      index = wordvecs.ship(args.vocab, args.cache_dir, args.dest, command=command)
      for v, e in index["tables"].items():
        print(f"ppmi{v}: {e['file']} {e['bytes']:,} bytes sha256 {e['sha256']}, {e['seen_pieces']:,} pieces "
              f"seen in {e['pieces']:,} of {e['corpus']}")
      print(f"recipe {index['recipe']}; wrote {args.dest or wordvecs.SHIPPED}")
    else:
      index = tok_lib.ship_default_tokenizers(args.vocab, args.cache_dir, args.dest, command=command)
      for v, e in index["tokenizers"].items():
        print(f"bpe{v}: {e['file']} {e['bytes']:,} bytes sha256 {e['sha256']}")
      print(f"for corpus {index['corpus']['file']} (sha256 {index['corpus']['sha256'][:16]}, recipe "
            f"{index['corpus_id']}); wrote {args.dest or tok_lib.SHIPPED}")
  except (pretrained.PretrainedError, data.DataError, ValueError) as e:
    cli.failure(e)
  print(f"the package ships {pretrained.shipped_bytes() / 1e6:.2f} MB of weights and tokenizers "
        f"(budget {pretrained.SHIP_BUDGET_BYTES / 1e6:.0f} MB)")


if __name__ == "__main__":
  main()
