#!/usr/bin/python3
"""An independent safetensors writer and reader in Python, for checking
storage/safetensors.cpp against PyTorch. Debian has no `safetensors` package,
so this follows the format by hand (https://github.com/huggingface/safetensors
README "Format", and the reference serializer's rules: tensors ordered by
descending dtype rank, then name; compact JSON; spaces to 8 bytes).

  safetensors_oracle.py write FILE EXPECTED.json
      Builds the tensors below with torch, writes FILE, and writes what they
      hold (values, and the float32 sources of the BF16/F16 ones) to
      EXPECTED.json for the C++ test to compare with.
  safetensors_oracle.py read FILE
      Reads FILE (written by C++) with its own strict parser, checks the
      layout rules, and compares every tensor with the same torch tensors.

Exit 0 when all is well; prints the first difference otherwise."""
import json
import math
import struct
import sys

import numpy as np
import torch

# The reference's Dtype enum order (increasing alignment); the writer sorts by
# it, descending.
RANK = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",
        "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
TORCH_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
               torch.uint8: "U8", torch.bool: "BOOL"}
SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
NUMPY = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
         "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}

# Float32 values chosen to exercise rounding to BF16 and F16: ties to even,
# the largest finite values and what lies past them, subnormals, signed zero,
# Inf and NaN.
SOURCE = [1.0, 1.00390625, 1.01171875, 1.0039064, -2.5, 0.1, 1.0 / 3.0,
          3.3895314e38, 3.4028235e38, 1e-40, -0.0, math.inf, -math.inf, math.nan,
          65504.0, 65519.0, 65520.0, 6e-8, 2.9802322e-08, 2.9802326e-08, 5.9604645e-08, 1.4e-45]

METADATA = {"format": "pt", "shammie.note": "ünïcode \"quoted\"\n"}


def build():
    """The tensors both directions are checked with."""
    torch.manual_seed(0)
    src = torch.tensor(SOURCE, dtype=torch.float32)
    return {
        "layers.0.weight": torch.randn(2, 3),
        "layers.0.bias": torch.tensor([-0.0, math.inf, -math.inf, math.nan, 1e-45, 0.1]),
        "emb.bf16": src.to(torch.bfloat16),
        "emb.f16": src.to(torch.float16),
        "ids": torch.tensor([-1, 2**40, 2**63 - 1], dtype=torch.int64),
        "i32": torch.tensor([[-7], [2**31 - 1]], dtype=torch.int32),
        "i16": torch.tensor([-32768, 0, 32767], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 128, 255], dtype=torch.uint8),
        "mask": torch.tensor([[True, False], [False, True]]),
        "f64": torch.tensor([1.0 / 3.0, -1e300, 5e-324], dtype=torch.float64),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "naïve \"q\"\tname": torch.tensor([7.0]),
    }


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write(path, expected_path):
    tensors = build()
    items = sorted(tensors.items(), key=lambda kv: (-RANK.index(TORCH_DTYPE[kv[1].dtype]), kv[0].encode("utf-8")))
    header = {"__metadata__": dict(sorted(METADATA.items()))}
    buffer = bytearray()
    for name, t in items:
        data = tensor_bytes(t)
        header[name] = {"dtype": TORCH_DTYPE[t.dtype], "shape": list(t.shape),
                        "data_offsets": [len(buffer), len(buffer) + len(data)]}
        buffer += data
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + bytes(buffer))

    def number(x):
        if isinstance(x, bool):
            return int(x)
        if isinstance(x, float) and not math.isfinite(x):
            return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
        return x

    expected = {"metadata": METADATA, "tensors": {}}
    for name, t in tensors.items():
        flat = t.reshape(-1)
        values = (flat.double() if t.dtype in (torch.bfloat16, torch.float16) else flat).tolist()
        entry = {"dtype": TORCH_DTYPE[t.dtype], "shape": list(t.shape), "values": [number(v) for v in values]}
        if t.dtype in (torch.bfloat16, torch.float16):
            entry["source"] = [number(v) for v in torch.tensor(SOURCE, dtype=torch.float32).double().tolist()]
        expected["tensors"][name] = entry
    with open(expected_path, "w") as f:
        json.dump(expected, f, ensure_ascii=False)
    print(f"python wrote {len(tensors)} tensors to {path}")


def fail(msg):
    print("python disagrees:", msg)
    sys.exit(1)


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        fail("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > 100_000_000 or 8 + n > len(data):
        fail(f"bad header length {n} for a {len(data)}-byte file")
    if n % 8 != 0:
        fail(f"header length {n} is not a multiple of 8")
    text = data[8:8 + n].decode("utf-8")
    if text.rstrip(" ") != text.rstrip() or not text.startswith("{"):
        fail("the header is not '{...}' padded with spaces")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            fail(f"duplicate keys in {keys}")
        return dict(pairs)  # keeps the file's order

    header = json.loads(text, object_pairs_hook=no_duplicates)
    if json.dumps(header, separators=(",", ":"), ensure_ascii=False) != text.rstrip(" "):
        fail("the header is not compact JSON in the reference's key order")
    buffer = data[8 + n:]
    keys = list(header)
    metadata = header.pop("__metadata__", {})
    if "__metadata__" in keys and keys[0] != "__metadata__":
        fail("__metadata__ is not the first key")
    if metadata != METADATA or list(metadata) != sorted(metadata):
        fail(f"metadata {metadata} != {METADATA} (or not sorted)")
    names = list(header)
    want_order = sorted(names, key=lambda k: (-RANK.index(header[k]["dtype"]), k.encode("utf-8")))
    if names != want_order:
        fail(f"tensor order {names}, the reference would write {want_order}")
    expected = build()
    if set(names) != set(expected):
        fail(f"tensors {sorted(names)} != {sorted(expected)}")
    pos = 0
    for name, info in header.items():
        if list(info) != ["dtype", "shape", "data_offsets"]:
            fail(f"{name}: fields {list(info)}")
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        if begin != pos or end - begin != math.prod(shape) * SIZE[dtype]:
            fail(f"{name}: offsets [{begin}, {end}] at position {pos} for {dtype}{shape}")
        pos = end
        raw = buffer[begin:end]
        if dtype == "BF16":
            got = torch.from_numpy(np.frombuffer(raw, dtype=np.int16).copy()).view(torch.bfloat16)
        else:
            got = torch.from_numpy(np.frombuffer(raw, dtype=NUMPY[dtype]).copy())
        got = got.reshape(shape)
        want = expected[name]
        if TORCH_DTYPE[want.dtype] != dtype or list(want.shape) != shape:
            fail(f"{name}: {dtype}{shape}, expected {TORCH_DTYPE[want.dtype]}{list(want.shape)}")
        if want.is_floating_point():
            # Exact, with -0.0 != 0.0; any NaN matches any NaN (torch's own
            # CPU conversions give BF16 NaN as 0xFFFF or 0x7FC0 by code path).
            g, w = got.double(), want.double()
            nan = w.isnan()
            same = torch.equal(g.isnan(), nan) and torch.equal(g[~nan], w[~nan])
            same = same and torch.equal(g[~nan].signbit(), w[~nan].signbit())
        else:
            same = torch.equal(got, want) and raw == tensor_bytes(want)
        if not same:
            fail(f"{name}: values {got.reshape(-1).tolist()} != {want.reshape(-1).tolist()}")
    if pos != len(buffer):
        fail(f"the tensors cover {pos} bytes of a {len(buffer)}-byte buffer")
    print(f"python reads what C++ wrote: {len(names)} tensors match torch")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "read":
        read(sys.argv[2])
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
