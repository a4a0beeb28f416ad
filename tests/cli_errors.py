"""The assertion behind every "user mistake" test: exit 2, one line on stderr, no traceback."""
from __future__ import annotations

import subprocess


def one_line_error(res: subprocess.CompletedProcess, *fragments: str, skip_warnings: bool = False) -> str:
    """Assert ``res`` failed as a user mistake: exit status 2, no traceback, exactly one line
    on stderr (``skip_warnings``: besides ``warning: …`` lines) holding every fragment.
    Returns that line."""
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    if skip_warnings:
        lines = [line for line in lines if not line.startswith("warning: ")]
    assert len(lines) == 1, res.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]
