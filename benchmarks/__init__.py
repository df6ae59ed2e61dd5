"""The benchmarks behind docs/BENCHMARKS.md, one module each, run as `rag bench NAME [options]`.

Each module's `main(argv)` parses its own options (`rag bench NAME --help` lists them); the
helpers they share are in `benchmarks.common`. The package is installed with the project
(`pip install -e .`), so `python benchmarks/bench_query.py` works as well; in a checkout that is
not installed, run a module from the repository's root: `python -m benchmarks.bench_query`.
"""
