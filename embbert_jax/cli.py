"""What every command line of the package shares: the exit-code convention (2 = bad input, as argparse
exits for a bad flag; 1 = a failure while running; 0 = done), defaults shown in --help, and typed integer
flags that argparse refuses in one usage line."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

BAD_INPUT, FAILURE = 2, 1


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Shows "(default: X)" after each flag's help, except where there is nothing to show (None, False, an
  empty string or list: the help says what happens then)."""

  def _get_help_string(self, action):
    if action.default in (None, False, "", []) or action.default is argparse.SUPPRESS:
      return action.help
    return super()._get_help_string(action)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
  return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


def at_least(low: int):
  """An argparse type: an int >= low (argparse then exits 2 with one usage line for anything else)."""
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
      raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value
  parse.__name__ = f"integer >= {low}"
  return parse


def bad_input(e: BaseException | str) -> NoReturn:
  """Exits 2 with one `error:` line."""
  print(f"error: {e}", file=sys.stderr)
  sys.exit(BAD_INPUT)


def failure(e: BaseException | str) -> NoReturn:
  """Exits 1 with one `error:` line."""
  print(f"error: {e}", file=sys.stderr)
  sys.exit(FAILURE)
