"""A larger English corpus built offline: the docstrings of every installed Python module.

    python bench/english_offline.py                  # writes ~/.cache/w2v_jax/bench/docstrings.txt
    python bench/vs_gensim.py --end-to-end --corpus ~/.cache/w2v_jax/bench/docstrings.txt \\
        --variants sg-ns --repeats 1 --update auto

The only English text on a machine without network beyond gensim's 453k-token Wikipedia sample
is documentation. This takes the module, class and function docstrings (``ast.get_docstring``)
of every ``.py`` file under the interpreter's standard library and its site-packages, test
folders left out, files in sorted order, and writes one paragraph per line, tokenised as
gensim's ``WikiCorpus`` tokenises the default corpus: lowercased, accents stripped, alphabetic
tokens of 2 to 15 characters (``gensim.utils.tokenize``). Paragraphs of fewer than 3 tokens and
doctest lines (``>>>``, ``...``) are dropped. It is technical English (the neighbours of
"array" are about arrays), so quality scores are only comparable between systems on it.

What it holds depends on what is installed: the script prints the token count and the sha256
of the file, which a benchmark figure should quote. Run time: about 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import site
import sys
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path


def source_files() -> list[Path]:
    """Every ``.py`` file of the standard library and the site-packages, no test folders."""
    roots = {Path(sysconfig.get_paths()["stdlib"])}
    roots |= {Path(p) for p in site.getsitepackages()}
    files = set()
    for root in roots:
        for path in root.rglob("*.py"):
            parts = set(path.relative_to(root).parts[:-1])
            if not parts & {"test", "tests", "testing", "idle_test"}:
                files.add(path.resolve())
    return sorted(files)


def docstrings(path: Path) -> Iterator[str]:
    """The docstrings of a file's module, classes and functions (none if it does not parse)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in old sources
            tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError, RecursionError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def paragraphs(doc: str) -> Iterator[str]:
    """Blank-line separated paragraphs, doctest lines removed."""
    block: list[str] = []
    for line in doc.splitlines() + [""]:
        s = line.strip()
        if s.startswith((">>>", "...")):
            continue
        if s:
            block.append(s)
        elif block:
            yield " ".join(block)
            block = []


def main(argv=None) -> int:
    from gensim.utils import tokenize

    default = Path(os.environ.get("W2V_JAX_CACHE", Path.home() / ".cache" / "w2v_jax"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=default / "bench" / "docstrings.txt")
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    files = source_files()
    tokens = lines = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for path in files:
            for doc in docstrings(path):
                for para in paragraphs(doc):
                    words = [
                        w for w in tokenize(para, lowercase=True, deacc=True) if 2 <= len(w) <= 15
                    ]
                    if len(words) >= 3:
                        f.write(" ".join(words) + "\n")
                        tokens += len(words)
                        lines += 1
    os.replace(tmp, args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(
        f"{args.out}: {tokens:,} tokens in {lines:,} lines from {len(files):,} files "
        f"(python {sys.version.split()[0]}); sha256 {digest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
