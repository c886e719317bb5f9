"""Everyday exports and hostile inputs the reader must take in its stride (issues 15 and 18):
recursive globs over symbolic-link loops, Excel's ``sep=`` line, blank and padded header
names, Excel's "Unicode text" ``.txt``, and an unterminated quote before long lines."""

from __future__ import annotations

import glob
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from importer.exceptions import InputError
from importer.records import Reject
from importer.sources import ReadOptions, SourceFile, iter_batches, resolve_inputs
from importer.sources import inputs as inputs_module

ROOT = Path(__file__).resolve().parent.parent
EDGE = ROOT / "sample_data" / "edge"


def read(path: Path | str, **options: object) -> tuple[SourceFile, pl.DataFrame, list[Reject]]:
    opts = ReadOptions(**options)  # type: ignore[arg-type]
    [source] = resolve_inputs([str(path)], opts)
    batches = list(iter_batches(source, opts))
    frame = pl.concat([b.frame for b in batches]) if batches else pl.DataFrame()
    return source, frame, [r for b in batches for r in b.rejects]


# ───────────── recursive globs (issue 18 item 12) ─────────────


def _tree_with_loops(root: Path) -> None:
    (root / "d" / "sub" / "deeper").mkdir(parents=True)
    (root / "d" / "a.csv").write_text("id\n1\n")
    (root / "d" / "sub" / "b.csv").write_text("id\n2\n")
    (root / "d" / "sub" / "deeper" / "c.csv").write_text("id\n3\n")
    (root / "d" / "sub" / "up").symlink_to("..")  # two loops back up the tree
    (root / "d" / "sub" / "deeper" / "top").symlink_to("../..")


def test_recursive_glob_over_symlink_loops_ends(tmp_path: Path) -> None:
    """Each directory once: the walk ends, every file once. Run in a child process so the
    old behaviour (glob following the loops for ever) fails on the timeout, not hangs."""
    _tree_with_loops(tmp_path)
    script = textwrap.dedent(f"""
        import os
        from importer.sources import resolve_inputs
        os.chdir({str(tmp_path)!r})
        print("|".join(s.path for s in resolve_inputs(["d/**/*.csv"])))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split("|") == ["d/a.csv", "d/sub/b.csv", "d/sub/deeper/c.csv"]


def test_recursive_glob_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(12):
        (tmp_path / "t" / f"dir{i}").mkdir(parents=True)
    (tmp_path / "t" / "dir3" / "x.csv").write_text("id\n1\n")
    monkeypatch.setattr(inputs_module, "MAX_GLOB_DIRS", 10)
    with pytest.raises(InputError, match="walks more than 10 directories — narrow it down"):
        resolve_inputs([str(tmp_path / "t" / "**" / "*.csv")])


@pytest.mark.parametrize("pattern", ["**/*.csv", "t/**/*.csv", "t/*/x*.csv", "t/**",
                                     "t/**/d?/*.csv", "*/dir1/**/*.csv", "t/[ab]*/**/*.csv"])
def test_glob_matches_what_python_glob_matches_without_loops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    rng = random.Random(pattern)
    for i in range(30):
        depth = rng.randint(0, 3)
        parts = [rng.choice(["a1", "b2", "dir1", "d9", ".hidden"]) for _ in range(depth)]
        folder = tmp_path.joinpath("t", *parts)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"x{i}.csv").write_text("id\n1\n")
    monkeypatch.chdir(tmp_path)
    want = sorted(p for p in glob.glob(pattern, recursive=True)
                  if os.path.isfile(p) and inputs_module._wanted(p))
    assert [s.path for s in resolve_inputs([pattern])] == want
    absolute = str(tmp_path / pattern)
    want_abs = sorted(p for p in glob.glob(absolute, recursive=True)
                      if os.path.isfile(p) and inputs_module._wanted(p))
    assert [s.path for s in resolve_inputs([absolute])] == want_abs
