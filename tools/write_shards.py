#!/usr/bin/env python3
"""Writes a text file as byte-level token shards in llm.c's .bin format (token = byte value, vocab 256).

    python3 tools/write_shards.py INPUT.txt OUT_PREFIX [--shard-tokens N] [--val-fraction 0.1]
                                  [--dtype uint16|uint32]

The layout is llm.c's dev/data/data_common.py (write_datafile), which sgt/data/shards.hpp reads:
a header of 256 little-endian int32 (magic, version, token count, then zeros), then the tokens little-endian.
    uint16: magic 20240520, version 1 (llm.c's "gpt-2" layout)
    uint32: magic 20240801, version 7 (llm.c's "llama-3" layout)

The split is the one sgt::text_dataset and nanoGPT use: train = the first int(n * (1 - val_fraction)) bytes,
val = the rest, so the shards of a file hold exactly text_dataset's split of it (tinyshakespeare.txt at 0.1:
train 1,003,854 / val 111,540). Each split is cut into shards of at most --shard-tokens tokens and numbered
from 000000 within its split:
    OUT_PREFIX_train_000000.bin, OUT_PREFIX_train_000001.bin, ...
    OUT_PREFIX_val_000000.bin, ...
(llm.c's fineweb.py numbers shards across both splits and makes shard 0, the FIRST tokens, the val shard:
fineweb_val_000000.bin, fineweb_train_000001.bin, ...; the globs "PREFIX_train_*.bin" and "PREFIX_val_*.bin"
select the splits in both schemes.) Load them with
    sgt::shard_dataset ds("OUT_PREFIX_train_*.bin", "OUT_PREFIX_val_*.bin", 256);

Standard library only.
"""

import argparse
import glob
import os
import struct
import sys

LAYOUTS = {
    "uint16": {"magic": 20240520, "version": 1, "size": 2},
    "uint32": {"magic": 20240801, "version": 7, "size": 4},
}
HEADER_INTS = 256


def write_shard(path, tokens, dtype):
    """Writes one shard; `tokens` is a bytes object of byte values (token = byte). Returns the file size."""
    layout = LAYOUTS[dtype]
    count = len(tokens)
    if not 0 < count < 2**31:
        raise SystemExit(f"error: shard {path}: {count} tokens, expected between 1 and 2**31 - 1")
    header = struct.pack(f"<{HEADER_INTS}i", layout["magic"], layout["version"], count,
                         *([0] * (HEADER_INTS - 3)))
    # Little-endian tokens below 256: the byte value, then zero bytes.
    body = bytearray(count * layout["size"])
    body[0::layout["size"]] = tokens
    with open(path, "wb") as f:
        f.write(header)
        f.write(body)
    size = len(header) + len(body)
    actual = os.path.getsize(path)
    if actual != size:
        raise SystemExit(f"error: shard {path}: wrote {actual} bytes, expected {size}")
    return size


def write_split(prefix, split, data, shard_tokens, dtype):
    """Writes `data` as shards PREFIX_split_000000.bin, ...; returns the paths written."""
    paths = []
    for index, start in enumerate(range(0, len(data), shard_tokens)):
        path = f"{prefix}_{split}_{index:06d}.bin"
        chunk = data[start:start + shard_tokens]
        size = write_shard(path, chunk, dtype)
        print(f"writing {len(chunk):,} tokens to {path} ({size:,} bytes, {dtype})")
        paths.append(path)
    return paths


def main():
    parser = argparse.ArgumentParser(description="Write a text file as byte-level llm.c token shards.")
    parser.add_argument("input", help="the text file (read as bytes)")
    parser.add_argument("out_prefix", help="output path prefix, e.g. data/shakespeare")
    parser.add_argument("--shard-tokens", type=int, default=100_000_000,
                        help="most tokens per shard (default 100,000,000, as llm.c's fineweb.py)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="the last fraction of the bytes that goes to val (default 0.1)")
    parser.add_argument("--dtype", choices=sorted(LAYOUTS), default="uint16",
                        help="token width: uint16 (magic 20240520) or uint32 (magic 20240801)")
    args = parser.parse_args()

    if not 0 < args.shard_tokens < 2**31:
        parser.error(f"--shard-tokens {args.shard_tokens}, expected between 1 and 2**31 - 1")
    if not 0.0 < args.val_fraction < 1.0:
        parser.error(f"--val-fraction {args.val_fraction}, expected a value in (0, 1)")
    try:
        with open(args.input, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SystemExit(f"error: cannot read {args.input}: {e.strerror}")

    n = len(data)
    n_train = int(n * (1.0 - args.val_fraction))
    if n_train == 0 or n_train == n:
        raise SystemExit(f"error: {args.input} has {n} bytes: a val fraction of {args.val_fraction} leaves "
                         f"train {n_train} / val {n - n_train}, expected both splits non-empty")
    out_dir = os.path.dirname(args.out_prefix)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)

    written = write_split(args.out_prefix, "train", data[:n_train], args.shard_tokens, args.dtype)
    written += write_split(args.out_prefix, "val", data[n_train:], args.shard_tokens, args.dtype)
    print(f"{args.input}: {n:,} bytes -> train {n_train:,} / val {n - n_train:,} tokens (vocab 256) in "
          f"{len(written)} shards")

    stale = []
    for split in ("train", "val"):
        stale += [p for p in sorted(glob.glob(f"{glob.escape(args.out_prefix)}_{split}_*.bin")) if p not in written]
    if stale:
        print(f"warning: {len(stale)} older shard(s) also match the globs and would be read with these: "
              f"{', '.join(stale)}; delete them", file=sys.stderr)


if __name__ == "__main__":
    main()
