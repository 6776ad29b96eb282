.PHONY: bench bench-notebook bench-dedup

# Winnow vs Ray Data vs Daft throughput; pass options with ARGS, e.g.
#   make bench ARGS="--files 8 --skip-4x"
bench:
	uv run --group bench python tests/benchmarks/bench_throughput.py $(ARGS)

# The same, with Winnow in an environment synced with the notebook extra (what a
# Jupyter user has: jupyterlab and its dependencies make `import ray` slower).
bench-notebook:
	UV_PROJECT_ENVIRONMENT=.bench/notebook-env uv sync --frozen --compile-bytecode --extra notebook
	uv run --group bench python tests/benchmarks/bench_throughput.py --winnow-python .bench/notebook-env/bin/python $(ARGS)

# Fuzzy dedup vs datatrove MinHash, exact dedup vs Ray Data, scored on ground truth;
# e.g. make bench-dedup ARGS="--docs 3000".
bench-dedup:
	uv run --group bench python tests/benchmarks/bench_dedup.py $(ARGS)
