"""Tooling around the product, never imported by it (the ``tools`` extra): the local stack
runner (``notifier stack``), the config renderers for local runs and tests, the component
benchmarks (``python -m notifier_tools.bench.NAME``) and :mod:`notifier_tools.procs`."""
