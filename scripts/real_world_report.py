"""Run the real-world battery of issue #25 and print its table.

    python scripts/real_world_report.py [-k SUBSTRING] [-v]

One row per scenario of ``tests/real_world.py``: its kind, whether stock
``torch.compile(fullgraph=True, backend="eager")`` gives eager's answer after the change, and what
``compile_once(backend="eager")`` under ``guards="inputs"`` does with ``on_mismatch="raise"``, with
``on_mismatch="recompile"``, and in the control without the change (``ok``, ``caught``,
``silent wrong``, ``refused``, ``crash <Exc>``); then counts per kind and mode, and the scenarios
whose recorded ``today`` (the xfail markers of ``tests/test_real_world.py``) no longer matches.
``-v`` adds each outcome's detail (the compile count, the error message, nocompile's warning).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import real_world

if __name__ == "__main__":
    sys.exit(real_world.main())
