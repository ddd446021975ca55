#!/usr/bin/env python3
"""Copy the files a ``docker build`` of this tree would send as its context: the tree less ``.dockerignore``.

Usage: ``build_context.py SOURCE DEST``. The patterns follow Docker's rules (moby's patternmatcher): each is
relative to the context's root (a leading ``/`` is dropped), ``*`` and ``?`` stay within one path segment,
``**`` spans any number of them, a pattern that matches a directory excludes everything under it, a leading
``!`` re-includes, and the last matching pattern decides. Unlike ``.gitignore`` a bare name matches only at
the root. Character classes (``[...]``) are not supported and are refused rather than misread.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path


def parse(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """The patterns of a ``.dockerignore``, in order, as (is_exception, regex over a relative POSIX path)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).replace(os.sep, "/").lstrip("/")
        if "[" in pattern or "\\" in pattern:
            raise ValueError(f".dockerignore pattern {line!r}: character classes and escapes are not supported")
        rules.append((exception, re.compile(_regex(pattern))))
    return rules


def _regex(pattern: str) -> str:
    out, i = "^", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out + "$"


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether ``path`` (relative, POSIX) stays out: the last rule matching it or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for exception, regex in rules:
        if any(regex.match(p) for p in prefixes):
            verdict = not exception
    return verdict


def context_files(root: Path, rules: list[tuple[bool, re.Pattern[str]]]) -> list[str]:
    """Every file under ``root`` that the context keeps, sorted. Excluded directories are not entered
    unless some exception could re-include a file inside them."""
    has_exceptions = any(exception for exception, _ in rules)
    kept = []
    for here, dirs, files in os.walk(root):
        rel = Path(here).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        if not has_exceptions:
            dirs[:] = [d for d in dirs if not excluded(prefix + d, rules)]
        kept += [prefix + f for f in files if not excluded(prefix + f, rules)]
    return sorted(kept)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    source, dest = Path(argv[1]).resolve(), Path(argv[2])
    ignore = source / ".dockerignore"
    rules = parse(ignore.read_text()) if ignore.exists() else []
    files = context_files(source, rules)
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target, follow_symlinks=True)
    print(f"build context: {len(files)} files copied to {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
