.PHONY: bench bench-dedup

# Winnow vs Ray Data vs Daft throughput; pass options with ARGS, e.g.
#   make bench ARGS="--files 8 --skip-4x"
bench:
	uv run --group bench python tests/benchmarks/bench_throughput.py $(ARGS)

# Fuzzy dedup vs datatrove MinHash, exact dedup vs Ray Data, scored on ground truth;
# e.g. make bench-dedup ARGS="--docs 3000". spacy (datatrove's English tokenizer) and
# orjson (its JsonlReader) are not in the bench group: brought in with --with.
bench-dedup:
	uv run --group bench --with spacy --with orjson python tests/benchmarks/bench_dedup.py $(ARGS)
