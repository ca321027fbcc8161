"""Code that runs in the sandbox's worker processes.

Everything here imports only the standard library: the sandboxed program can reach whatever
its process has imported, so this package must never pull in persd, the task data or anything
that holds an answer. The workers load it by path, not as ``persd.sandbox._child``.
"""
