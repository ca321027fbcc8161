"""One lock for every Python AST the trusted parent builds from its scoring threads.

CPython 3.11 keeps the AST constructor's recursion counter in interpreter-wide state, shared by
``ast.parse`` (C tree to Python objects) and ``compile`` of an AST object (the other way). Two
threads doing either at once (a garbage collection inside one can run a finalizer that lets the
other in) corrupt it, and the call fails with "SystemError: AST constructor recursion depth
mismatch" (CPython gh-106905 and kin). The pool scores samples in threads: expected values
(``compare.parse_expected``) and assert tests (``remote.split_assert``) are parsed there, so
both take this lock. Compiling source text does not touch that counter.
"""

from __future__ import annotations

import threading

AST_LOCK = threading.Lock()
