"""schemathesis's command line with `ast.parse` serialised by a lock.

CPython 3.11's `ast.parse` is not safe across threads (gh-106905: "AST constructor recursion depth mismatch");
hypothesis calls it to describe a filtered strategy while schemathesis's worker threads generate cases, and the
coverage phase crashed on it in CI. One lock around it removes the race without giving up the workers."""

import ast
import runpy
import threading

_lock = threading.Lock()
_parse = ast.parse


def _serial_parse(*args, **kwargs):
    with _lock:
        return _parse(*args, **kwargs)


ast.parse = _serial_parse
runpy.run_module("schemathesis.cli", run_name="__main__", alter_sys=True)
