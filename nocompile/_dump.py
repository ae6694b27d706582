"""``dump_dir=`` / ``NOCOMPILE_DUMP_DIR``: each compile's artifacts written to disk, once.

One sub-folder per function and specialization::

    <dump_dir>/<module>.<qualname>-<state id>-pid<pid>-spec<n>/
        transformed_code.py   Dynamo's transformed bytecode, decompiled by depyf
        fx_graph.py           the FX graph(s) Dynamo handed to the backend, as readable Python
        guards.txt            every guard Dynamo wanted: type, name, check, dropped or kept
        explain.txt           the explain() report of the function's state after this compile

The state id is unique in the process and the pid tells processes apart; an existing folder of
that name (a recycled pid, a reset state) gets a ``-2``, ``-3``... suffix, so folders never collide.
Writing happens in the compile path, after the specialization is installed. Nothing here raises:
a folder or file that cannot be written, or bytecode that cannot be decompiled, is logged as a
WARNING on ``logging.getLogger("nocompile")`` with the path and the reason, and the user's call
goes on.
"""

from __future__ import annotations

import dis
import io
import logging
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._codegen import qualified_name
from ._explain import build_report
from ._record import CompileRecord, GuardRecord

if TYPE_CHECKING:
    from ._view import Specialization, StateView

log = logging.getLogger("nocompile")

DUMP_ENV = "NOCOMPILE_DUMP_DIR"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def dump_root(option: str | None) -> str | None:
    """Where to dump: the ``dump_dir`` option, else ``NOCOMPILE_DUMP_DIR``, else nowhere."""
    if option:
        return option
    return os.environ.get(DUMP_ENV, "").strip() or None


def after_compile(state: StateView, spec: Specialization, index: int) -> None:
    """Dump one freshly installed specialization if a dump directory is set. Never raises."""
    fn = state.function
    where = qualified_name(fn)
    root: str | None = None
    try:
        root = dump_root(state.options.dump_dir)
        if root is None:
            return
        record = spec.record
        if record is None:  # every compile path records; nothing to dump without one
            return
        name = _UNSAFE.sub("_", f"{where}-{state.tag}-pid{os.getpid()}-spec{index}")
        folder = _new_folder(os.path.abspath(os.path.expanduser(root)), name)
    except OSError as exc:
        log.warning(
            "%s: could not create a dump folder under %r (%s: %s); nothing dumped for this compile",
            where,
            root,
            type(exc).__name__,
            exc.strerror or exc,
        )
        return
    except Exception as exc:  # a bug here must not break the user's call
        log.warning("%s: dump failed before writing (%s: %s)", where, type(exc).__name__, exc)
        return
    record.dump_path = folder
    files: dict[str, Callable[[], str]] = {
        "transformed_code.py": lambda: _transformed_code(record, spec, where),
        "fx_graph.py": lambda: _fx_graphs(record, where),
        "guards.txt": lambda: _guards_text(record.guards, where, state.options.guards),
        "explain.txt": lambda: str(build_report(fn, state.options, [("state", state)])),
    }
    written = []
    for filename, make in files.items():
        path = os.path.join(folder, filename)
        try:
            text = make()
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            written.append(filename)
        except OSError as exc:
            log.warning("%s: could not write %s (%s: %s)", where, path, type(exc).__name__, exc.strerror or exc)
        except Exception as exc:
            log.warning("%s: could not produce %s (%s: %s)", where, path, type(exc).__name__, exc)
    log.debug("%s: dumped %s to %s", where, ", ".join(written) or "nothing", folder)


def _new_folder(root: str, name: str) -> str:
    os.makedirs(root, exist_ok=True)
    for attempt in range(1, 1000):
        path = os.path.join(root, name if attempt == 1 else f"{name}-{attempt}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{name} and 998 numbered variants already exist in {root}")


def _transformed_code(record: CompileRecord, spec: Specialization, where: str) -> str:
    header = (
        f"# Dynamo's transformed bytecode of {where}, decompiled by depyf.\n"
        f"# Compiled for: {record.signature}\n"
        "# Names like __compiled_fn_* are the compiled graph; Dynamo installs them in the function's globals.\n\n"
    )
    source, error = record.decompiled(spec.transformed_code, where)
    if source is not None:
        return header + _valid_def_names(source)
    listing = io.StringIO()
    if spec.transformed_code is not None:
        dis.dis(spec.transformed_code, file=listing)
    commented = "".join(f"# {line}\n" for line in listing.getvalue().splitlines())
    return header + f"# Not decompiled: {error}\n# The bytecode, disassembled:\n" + commented


_INVALID_DEF = re.compile(r"^(\s*def )<(\w+)>\(", re.MULTILINE)


def _valid_def_names(source: str) -> str:
    """``def <lambda>(x):`` (what depyf writes for a lambda's code) as ``def _lambda_(x):``, so
    the file is valid Python."""
    return _INVALID_DEF.sub(lambda m: f"{m.group(1)}_{m.group(2)}_(", source)


def _fx_graphs(record: CompileRecord, where: str) -> str:
    if not record.graphs:
        return f"# No FX graph was recorded for {where}.\n"
    parts = []
    for i, graph in enumerate(record.graphs):
        parts.append(
            f"# FX graph {i + 1} of {where}: {graph.inputs} inputs ({graph.from_call} from the call, "
            f"{graph.parameters} parameters, {graph.buffers} buffers)\n" + graph.code
        )
    return "\n\n".join(parts)


def _guards_text(guards: list[GuardRecord], where: str, policy: str) -> str:
    lines = [f"# Guards Dynamo wanted for {where}: {len(guards)}", "# status\tkind\tguard type\tname\tcheck"]
    if policy == "inputs":
        lines.insert(1, "# watched: kept, evaluated when the per-call fingerprint changes (guards='inputs')")
    kept = "watched" if policy == "inputs" else "kept"
    for g in guards:
        status = kept if g.kept else "dropped"
        check = " and ".join(g.code)
        lines.append(f"{status}\t{g.kind}\t{g.guard_type}\t{g.name or '-'}\t{check or '-'}")
    return "\n".join(lines) + "\n"
