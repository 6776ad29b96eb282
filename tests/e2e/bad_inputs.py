"""A catalogue of broken inputs for the bad-input sweep (tests/e2e/test_bad_input_sweep.py).

Each kind writes one small input (or a FIFO, a folder, a dangling link) and says
what must come of it if Winnow accepts it: the ids that must come out, how many
rows at least must be quarantined, and how many rows it holds when that is
known. ``expect`` is what the spec asks: refuse (exit 2), quarantine, pass, or
either of the clean ends.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import zstandard

TEXT = "the quick brown fox jumps over the lazy dog while a careful pipeline sorts web text"
HEADER = b"id,url,text,source\n"
SPAN = 1000  # ids of kind number k lie in [k * SPAN, (k + 1) * SPAN)


@dataclass
class Made:
    """What a kind wrote: the path to pass, the ids that must come out, how many rows
    at least must be quarantined if the file is accepted, and its rows if known."""

    path: Path
    good: list[int] = field(default_factory=list)
    bad: int = 0
    rows: int | None = None


@dataclass
class Kind:
    """One kind of bad input; the sweep fills in ``made``, ``outcome`` and ``clean``."""

    name: str
    expect: str  # what the spec asks: refuse | quarantine | pass | either
    make: Callable[[Path, int], Made]
    outcome: str = ""
    clean: bool = False
    made: Made | None = None


def doc(i: int, **over: object) -> bytes:
    row = {"id": i, "url": f"https://x.example/{i}", "text": TEXT, "source": "sweep", **over}
    return json.dumps(row).encode() + b"\n"


def docs(ids: range | list[int]) -> bytes:
    return b"".join(doc(i) for i in ids)


def csv_row(i: int, text: str = TEXT) -> bytes:
    return f"{i},https://x.example/{i},{text},sweep\n".encode()


def demo_table(ids: range) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "id": pa.array(list(ids), pa.int64()),
            "url": [f"https://x.example/{i}" for i in ids],
            "text": [TEXT] * n,
            "source": ["sweep"] * n,
        }
    )


def write(d: Path, name: str, data: bytes) -> Path:
    path = d / name
    path.write_bytes(data)
    return path


# -- the kinds ----------------------------------------------------------------------
KINDS: list[Kind] = []


def kind(name: str, expect: str) -> Callable[[Callable[[Path, int], Made]], None]:
    def register(make: Callable[[Path, int], Made]) -> None:
        KINDS.append(Kind(name, expect, make))

    return register


def one_bad_line(name: str, bad: bytes, expect: str = "quarantine") -> None:
    """A JSONL kind: a good line, the bad lines ``bad``, another good line."""
    lines = bad.count(b"\n") + 1

    def make(d: Path, b: int) -> Made:
        data = doc(b) + bad.replace(b"@ID", str(b + 1).encode()) + b"\n" + doc(b + 2)
        path = write(d, "one-bad-line.jsonl", data)
        return Made(path, good=[b, b + 2], bad=lines, rows=lines + 2)

    kind(name, expect)(make)


@kind("jsonl empty file", "either")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "empty.jsonl", b""), rows=0)


@kind("jsonl garbage bytes", "quarantine")
def _(d: Path, b: int) -> Made:
    junk = Random(b).randbytes(4000).replace(b"\n", b"\x01")
    data = b"\n".join(junk[i : i + 400] for i in range(0, 4000, 400)) + b"\n"
    return Made(write(d, "garbage.jsonl", data), bad=10, rows=10)


@kind("jsonl UTF-8 BOM", "either")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "bom.jsonl", b"\xef\xbb\xbf" + doc(b) + doc(b + 1)), good=[b + 1], rows=2)


one_bad_line("jsonl invalid UTF-8", b'{"id": @ID, "url": "u", "text": "caf\xe9 au lait"}')
one_bad_line("jsonl non-object line (array)", b"[1, 2, 3]")
one_bad_line("jsonl non-object line (number, null)", b"42\nnull", "quarantine")
one_bad_line("jsonl wrong type: string id", b'{"id": "seven", "text": "x"}')
one_bad_line("jsonl wrong type: float id", b'{"id": 12.5, "url": "u", "text": "x y z"}')
one_bad_line("jsonl wrong type: bool id", b'{"id": true, "url": "u", "text": "x y z"}')
one_bad_line("jsonl wrong type: number text", b'{"id": @ID, "url": "u", "text": 7}')
one_bad_line("jsonl wrong type: object url", b'{"id": @ID, "url": {"a": 1}, "text": "x"}')
one_bad_line("jsonl id beyond int64", b'{"id": 1180591620717411303424, "text": "x"}')
one_bad_line("jsonl NUL bytes in a line", b'{"id": @ID, "text": "a\x00b"}\n\x00\x00\x00')
one_bad_line("jsonl deep nesting", b'{"id": @ID, "text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
one_bad_line("jsonl two objects on one line", b'{"id": @ID, "text": "a"} {"id": @ID, "text": "b"}')


@kind("jsonl huge single line (4 MiB)", "pass")
def _(d: Path, b: int) -> Made:
    text = (TEXT + " ") * (4 * 2**20 // (len(TEXT) + 1))
    return Made(write(d, "huge.jsonl", doc(b, text=text)), good=[b], rows=1)


@kind("jsonl mixed line endings (CRLF, LF, lone CR)", "either")
def _(d: Path, b: int) -> Made:
    data = doc(b).rstrip() + b"\r\n" + doc(b + 1) + doc(b + 2).rstrip() + b"\r" + doc(b + 3)
    return Made(write(d, "endings.jsonl", data), good=[b, b + 1])


@kind("jsonl blank and whitespace lines", "pass")
def _(d: Path, b: int) -> Made:
    data = doc(b) + b"\n   \n\t\n" + doc(b + 1) + b"\n"
    return Made(write(d, "blank.jsonl", data), good=[b, b + 1])


@kind("jsonl torn last line", "quarantine")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "torn.jsonl", doc(b) + doc(b + 1)[:30]), good=[b], bad=1, rows=2)


@kind("jsonl duplicate keys", "pass")
def _(d: Path, b: int) -> Made:
    data = doc(b).replace(b'{"id": ', f'{{"id": {b}, "id": '.encode(), 1)
    return Made(write(d, "dupkeys.jsonl", data), good=[b], rows=1)


@kind("jsonl missing fields", "either")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "missing.jsonl", doc(b) + f'{{"id": {b + 1}}}\n'.encode()), [b], rows=2)


@kind("jsonl extra fields", "either")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "extra.jsonl", doc(b, extra=[1, 2])), rows=1)


# -- compressed JSONL
@kind("jsonl.gz that is not gzip", "refuse")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "plain.jsonl.gz", docs(range(b, b + 5))))


@kind("jsonl.gz cut short", "quarantine")
def _(d: Path, b: int) -> Made:
    data = gzip.compress(docs(range(b, b + 400)))
    return Made(write(d, "cut.jsonl.gz", data[:-40]), good=list(range(b, b + 100)), bad=1)


@kind("jsonl.gz of 0 bytes", "either")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "zero.jsonl.gz", b""), rows=0)


@kind("jsonl.gz with trailing garbage", "either")
def _(d: Path, b: int) -> Made:
    data = gzip.compress(docs(range(b, b + 10))) + b"this is no gzip member"
    return Made(write(d, "trailing.jsonl.gz", data), good=list(range(b, b + 10)))


@kind("jsonl.gz of two members", "pass")
def _(d: Path, b: int) -> Made:
    data = gzip.compress(docs(range(b, b + 5))) + gzip.compress(docs(range(b + 5, b + 10)))
    return Made(write(d, "members.jsonl.gz", data), good=list(range(b, b + 10)), rows=10)


@kind("jsonl.zst that is not zstd", "refuse")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "plain.jsonl.zst", docs(range(b, b + 5))))


def frames(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` as independent zstd frames, split at byte offsets ``cuts``."""
    bounds = [0, *cuts, len(data)]
    z = zstandard.ZstdCompressor()
    return [z.compress(data[lo:hi]) for lo, hi in itertools.pairwise(bounds)]


@kind("jsonl.zst cut between frames (mid-line)", "quarantine")
def _(d: Path, b: int) -> Made:
    data = docs(range(b, b + 60))
    third = len(data) // 3 + 7  # not on a line boundary
    kept = data[: 2 * third]
    whole = kept.count(b"\n")
    path = write(d, "frames-cut.jsonl.zst", b"".join(frames(data, [third, 2 * third])[:2]))
    return Made(path, good=list(range(b, b + whole)), bad=1, rows=whole + 1)


@kind("jsonl.zst cut inside a frame", "quarantine")
def _(d: Path, b: int) -> Made:
    data = zstandard.ZstdCompressor().compress(docs(range(b, b + 50)))
    return Made(write(d, "mid-frame.jsonl.zst", data[:-20]), bad=1)


@kind("jsonl.zst of three frames", "pass")
def _(d: Path, b: int) -> Made:
    data = docs(range(b, b + 30))
    path = write(d, "three.jsonl.zst", b"".join(frames(data, [len(data) // 3, len(data) // 2])))
    return Made(path, good=list(range(b, b + 30)), rows=30)


# -- CSV
@kind("csv empty file", "either")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "empty.csv", b""), rows=0)


@kind("csv header only", "pass")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "header.csv", HEADER), rows=0)


@kind("csv ragged rows", "quarantine")
def _(d: Path, b: int) -> Made:
    data = HEADER + csv_row(b) + f"{b + 1},only\n".encode() + csv_row(b + 2)
    data += f"{b + 3},u,t,s,one too many\n".encode()
    return Made(write(d, "ragged.csv", data), good=[b, b + 2], bad=2, rows=4)


@kind("csv of another schema", "refuse")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "other.csv", b"foo,bar\n1,2\n3,4\n"), bad=2)


@kind("csv duplicate columns", "either")
def _(d: Path, b: int) -> Made:
    data = b"id,url,text,text,source\n" + f"{b},u,{TEXT},{TEXT},s\n".encode()
    return Made(write(d, "dupcols.csv", data))


@kind("csv UTF-8 BOM", "pass")
def _(d: Path, b: int) -> Made:
    data = b"\xef\xbb\xbf" + HEADER + csv_row(b) + csv_row(b + 1)
    return Made(write(d, "bom.csv", data), good=[b, b + 1], rows=2)


@kind("csv invalid UTF-8", "quarantine")
def _(d: Path, b: int) -> Made:
    data = HEADER + csv_row(b) + f"{b + 1},u,caf".encode() + b"\xe9 au lait,s\n" + csv_row(b + 2)
    return Made(write(d, "utf8.csv", data), good=[b, b + 2], bad=1, rows=3)


@kind("csv wrong type (id)", "quarantine")
def _(d: Path, b: int) -> Made:
    data = HEADER + csv_row(b) + f"abc,u,{TEXT},s\n".encode() + csv_row(b + 2)
    return Made(write(d, "type.csv", data), good=[b, b + 2], bad=1, rows=3)


@kind("csv NUL bytes", "either")
def _(d: Path, b: int) -> Made:
    data = HEADER + csv_row(b) + f"{b + 1},u,a".encode() + b"\x00b,s\n" + csv_row(b + 2)
    return Made(write(d, "nul.csv", data), good=[b, b + 2], rows=3)


@kind("csv quoted field with a newline", "pass")
def _(d: Path, b: int) -> Made:
    data = HEADER + csv_row(b) + f'{b + 1},u,"{TEXT}\n{TEXT}",s\n'.encode() + csv_row(b + 2)
    return Made(write(d, "quoted.csv", data), good=[b, b + 1, b + 2], rows=3)


@kind("csv unterminated quote", "either")
def _(d: Path, b: int) -> Made:
    data = HEADER + csv_row(b) + csv_row(b + 1) + f'{b + 2},u,"{TEXT},s\n'.encode()
    return Made(write(d, "unterminated.csv", data), bad=1)


@kind("csv CRLF line endings", "pass")
def _(d: Path, b: int) -> Made:
    data = (HEADER + csv_row(b) + csv_row(b + 1)).replace(b"\n", b"\r\n")
    return Made(write(d, "crlf.csv", data), good=[b, b + 1], rows=2)


@kind("csv.gz that is not gzip", "refuse")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "plain.csv.gz", HEADER + csv_row(b)))


@kind("csv.gz cut short", "refuse")
def _(d: Path, b: int) -> Made:
    data = gzip.compress(HEADER + b"".join(csv_row(i) for i in range(b, b + 300)))
    return Made(write(d, "cut.csv.gz", data[:-30]))


# -- Parquet
def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue())


@kind("parquet of 0 bytes", "refuse")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "zero.parquet", b""))


@kind("parquet garbage bytes", "refuse")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "garbage.parquet", Random(b).randbytes(3000)))


@kind("parquet footer cut short", "refuse")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "cut.parquet", parquet_bytes(demo_table(range(b, b + 20)))[:-10]))


@kind("parquet of another schema", "either")
def _(d: Path, b: int) -> Made:
    data = parquet_bytes(pa.table({"foo": [1, 2, 3], "bar": ["a", "b", "c"]}))
    return Made(write(d, "other.parquet", data), bad=3, rows=3)


@kind("parquet wrong column type (string id)", "either")
def _(d: Path, b: int) -> Made:
    table = demo_table(range(b, b + 2)).set_column(0, "id", pa.array(["one", "two"]))
    return Made(write(d, "type.parquet", parquet_bytes(table)), bad=2, rows=2)


@kind("parquet duplicate columns", "either")
def _(d: Path, b: int) -> Made:
    t = demo_table(range(b, b + 2))
    table = pa.Table.from_arrays([*t.columns, t.column("text")], names=[*t.column_names, "text"])
    return Made(write(d, "dupcols.parquet", parquet_bytes(table)), rows=2)


@kind("parquet with 0 rows", "pass")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "norows.parquet", parquet_bytes(demo_table(range(0)))), rows=0)


@kind("a folder named x.parquet", "refuse")
def _(d: Path, b: int) -> Made:
    (d / "x.parquet").mkdir()
    return Made(d / "x.parquet")


# -- Arrow IPC
def ipc_bytes(table: pa.Table, stream: bool = False) -> bytes:
    sink = pa.BufferOutputStream()
    opener = ipc.new_stream if stream else ipc.new_file
    with opener(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=10):
            writer.write_batch(batch)
    return bytes(sink.getvalue())


@kind("arrow of 0 bytes", "refuse")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "zero.arrow", b""))


@kind("arrow garbage bytes", "refuse")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "garbage.arrow", Random(b).randbytes(3000)))


@kind("arrow file cut short", "refuse")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "cut.arrow", ipc_bytes(demo_table(range(b, b + 30)))[:-20]))


@kind("arrow stream cut inside a batch", "either")
def _(d: Path, b: int) -> Made:
    data = ipc_bytes(demo_table(range(b, b + 30)), stream=True)
    return Made(write(d, "cut-stream.arrow", data[: len(data) - 200]), bad=1)


@kind("arrow of another schema", "refuse")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "other.arrow", ipc_bytes(pa.table({"foo": [1, 2]}))), bad=2)


# -- not regular files
@kind("a FIFO named x.jsonl", "refuse")
def _(d: Path, b: int) -> Made:
    os.mkfifo(d / "pipe.jsonl")
    return Made(d / "pipe.jsonl")


@kind("a dangling symlink x.jsonl", "refuse")
def _(d: Path, b: int) -> Made:
    (d / "link.jsonl").symlink_to(d / "nowhere.jsonl")
    return Made(d / "link.jsonl")


@kind("an unreadable file (chmod 000)", "refuse")
def _(d: Path, b: int) -> Made:
    path = write(d, "secret.jsonl", docs(range(b, b + 3)))
    path.chmod(0)
    return Made(path)


@kind("an unknown extension (.txt)", "refuse")
def _(d: Path, b: int) -> Made:
    return Made(write(d, "notes.txt", docs(range(b, b + 3))))
