#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ (standard library only; the outputs are committed, so running
this is only needed to change them). Names say what the regression test expects: valid_* must load and pass
every step of the harness, bad_* must be refused with sgt::error."""
import json
import pathlib
import shutil
import struct

here = pathlib.Path(__file__).resolve().parent
st_dir = here / "corpus" / "fuzz_safetensors"
sh_dir = here / "corpus" / "fuzz_shards"


def safetensors(tensors, metadata=None, raw_header=None):
    """tensors: list of (name, dtype, shape, bytes) laid out in order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def write(dir_, name, blob):
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / name).write_bytes(blob)


# --- safetensors --------------------------------------------------------------------------------------------
shutil.copyfile(here.parent / "tests" / "io" / "data" / "python_written.safetensors",
                st_dir / "valid_python_written.safetensors")
write(st_dir, "valid_empty.safetensors", safetensors([]))
write(st_dir, "valid_all_dtypes.safetensors", safetensors([
    ("bool", "BOOL", [3], bytes([0, 1, 1])),
    ("u8", "U8", [2], bytes([0, 255])),
    ("i8", "I8", [2], struct.pack("<2b", -128, 127)),
    ("f8_e4m3", "F8_E4M3", [4], bytes([0x00, 0x38, 0x7F, 0xFF])),
    ("f8_e5m2", "F8_E5M2", [4], bytes([0x00, 0x3C, 0x7C, 0xFE])),
    ("i16", "I16", [2], struct.pack("<2h", -32768, 32767)),
    ("u16", "U16", [2], struct.pack("<2H", 0, 65535)),
    ("f16", "F16", [2, 2], struct.pack("<4H", 0x3C00, 0x0001, 0x7C00, 0xFE00)),
    ("bf16", "BF16", [3], struct.pack("<3H", 0x3F80, 0x0001, 0xFFC0)),
    ("i32", "I32", [2], struct.pack("<2i", -(2 ** 31), 2 ** 31 - 1)),
    ("u32", "U32", [2], struct.pack("<2I", 0, 2 ** 32 - 1)),
    ("f32", "F32", [1, 2], struct.pack("<2f", 1.5, float("inf"))),
    ("i64", "I64", [2], struct.pack("<2q", -(2 ** 63), 2 ** 63 - 1)),
    ("u64", "U64", [2], struct.pack("<2Q", 0, 2 ** 64 - 1)),
    ("f64", "F64", [2], struct.pack("<2d", 1e300, -0.0)),
    ("scalar", "F32", [], struct.pack("<f", 3.0)),
    ("empty", "F32", [0], b""),
    ("empty2d", "I64", [3, 0], b""),
], metadata={"format": "pt", "note": "every dtype"}))
write(st_dir, "valid_null_metadata.safetensors",
      safetensors([], raw_header=b'{"__metadata__":null,"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}')
      + struct.pack("<2f", 1.0, 2.0))
write(st_dir, "bad_overlap.safetensors",
      safetensors([], raw_header=b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
                                 b'"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}') + b"abc")
write(st_dir, "bad_duplicate_key.safetensors",
      safetensors([], raw_header=b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                 b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}') + b"x")
write(st_dir, "bad_truncated.safetensors", safetensors([("w", "F32", [4], bytes(16))])[:-3])


# --- llm.c shards -------------------------------------------------------------------------------------------
def shard(magic, version, tokens, fmt, b_byte=0, t_byte=0, vocab_byte=0, fix_byte=0, count=None):
    header = [0] * 256
    header[0], header[1], header[2] = magic, version, len(tokens) if count is None else count
    # header[3] is unused by llm.c; the harness reads its bytes 12..15 (B, T, vocabulary, fix the count).
    header[3] = b_byte | t_byte << 8 | vocab_byte << 16 | fix_byte << 24
    return struct.pack("<256i", *header) + struct.pack(f"<{len(tokens)}{fmt}", *tokens)


write(sh_dir, "valid_u16_small.bin", shard(20240520, 1, [i * 7 % 512 for i in range(64)], "H"))
write(sh_dir, "valid_u16_b3_t5.bin", shard(20240520, 1, [i % 500 for i in range(200)], "H", b_byte=2, t_byte=4))
write(sh_dir, "valid_u16_gpt2.bin", shard(20240520, 1, [50256 - i for i in range(40)], "H", vocab_byte=1))
write(sh_dir, "valid_u32_llama3.bin",
      shard(20240801, 7, [128000 + i % 256 for i in range(48)], "I", b_byte=1, t_byte=7, vocab_byte=2))
write(sh_dir, "valid_u32_small.bin", shard(20240801, 7, [i % 512 for i in range(33)], "I"))
# A wrong count and a partial token, which the harness fixes up (bit 0 of header byte 15).
write(sh_dir, "valid_u32_fixup.bin",
      shard(20240801, 7, [i % 512 for i in range(30)], "I", t_byte=2, fix_byte=1, count=1000) + b"\x01\x02")
write(sh_dir, "bad_version.bin", shard(20240801, 1, list(range(16)), "I"))
write(sh_dir, "bad_count.bin", shard(20240520, 1, list(range(16)), "H", count=17))
