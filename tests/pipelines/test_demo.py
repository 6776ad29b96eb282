"""The demo's vectorized counters give exactly what the regexes they replace give."""

from __future__ import annotations

import demo
import pyarrow as pa
import pyarrow.compute as pc
import pytest

TRICKY = pa.array(
    ["", None, "a", " a ", "hello world", "tab\tsep\nnew\rx\fy", "héllo wörld ça", "  ",
     "xxx", "日本 語", "a\u00a0b", "a\vb", "ABC xyz 123", None, "", "Zz"]
)  # fmt: skip
ARRAYS = {
    "tricky": TRICKY,
    "sliced": TRICKY.slice(3, 9),
    "empty": pa.array([], pa.string()),
    "all null": pa.array([None, None], pa.string()),
    "chunked": pa.chunked_array([TRICKY[:5], TRICKY[5:]]),
}
COUNTERS = [(demo.word_count, r"\S+"), (demo.ascii_letter_count, r"[A-Za-z]")]


def _regex(arr: pa.Array | pa.ChunkedArray, pattern: str) -> list[int | None]:
    out = pc.count_substring_regex(arr, pattern)
    return (out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out).to_pylist()


@pytest.mark.parametrize("name", ARRAYS)
@pytest.mark.parametrize(("counter", "pattern"), COUNTERS)
def test_counters_match_the_regex_on_edge_cases(counter, pattern: str, name: str) -> None:
    assert counter(ARRAYS[name]).to_pylist() == _regex(ARRAYS[name], pattern)


def test_counters_match_the_regex_on_the_demo_sample(demo_inputs: list[str]) -> None:
    from winnow import sources

    checked = 0
    for path in demo_inputs:
        [f] = sources.discover([path])
        rows = sources.file_stats(f)["rows"]
        for batch, _ in sources.read(f, [(0, rows)], demo.SCHEMA):
            text = demo.Normalize().process(batch).column("text")
            for counter, pattern in COUNTERS:
                assert counter(text).to_pylist() == _regex(text, pattern)
            checked += len(text)
    assert checked > 1000
