"""transformers stays optional: the HF example exits cleanly, with a message, without it."""

from __future__ import annotations

import pathlib
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "hf_generate.py"

BLOCK_TRANSFORMERS = f"""
import runpy, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("transformers blocked by the test")

sys.meta_path.insert(0, Block())
runpy.run_path({str(EXAMPLE)!r}, run_name="__main__")
"""


def test_hf_example_without_transformers_exits_cleanly_with_a_message() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCK_TRANSFORMERS], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pip install 'nocompile[hf]'" in result.stdout


def test_nocompile_imports_without_transformers() -> None:
    code = BLOCK_TRANSFORMERS.split("runpy.run_path")[0] + "import nocompile; print(nocompile.compile_once)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "compile_once" in result.stdout, result.stderr[-2000:]
