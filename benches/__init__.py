"""tracekit benchmarks (not timed tests).

Run them with ``python -m benches [names...] [--quick]`` from the repository root;
see :mod:`benches.__main__`.  Each ``bench_<name>.py`` script is also runnable on
its own and prints one JSON document.
"""
