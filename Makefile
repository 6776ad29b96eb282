.PHONY: bench

# Winnow vs Ray Data vs Daft throughput; pass options with ARGS, e.g.
#   make bench ARGS="--files 8 --skip-4x"
bench:
	uv run --group bench python tests/benchmarks/bench_throughput.py $(ARGS)
