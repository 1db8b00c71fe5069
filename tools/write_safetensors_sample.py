"""Write tests/io/data/python_written.safetensors with the reference (Rust) safetensors serializer.

tests/io/test_safetensors.cpp reads this file and checks the values below, so the C++ reader is tested
against the reference writer and not only against its own. numpy has no bfloat16, so the BF16 tensor is
passed as raw bits; the values are exactly representable, so their bits are the upper halves of float32s.
The reference writer orders tensors by dtype alignment, then name, and pads the header to 8 bytes.
One metadata key only: the serializer writes metadata in hash order, and one key keeps the file reproducible.

    python3 tools/write_safetensors_sample.py
"""
import os

import numpy as np
import safetensors

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "io", "data",
                   "python_written.safetensors")

# The values the C++ test expects.
weight = np.array([[0.5, -1.25, 3.0], [100.0, -0.0, 6.5]], dtype=np.float32)        # F32 [2, 3]
scale = np.array([1.0, -2.0, 0.15625], dtype=np.float32)                           # BF16 [3]
ids = np.array([0, -1, 2**40, 2**63 - 1], dtype=np.int64)                           # I64 [4]
step = np.array(7, dtype=np.int64)                                                  # I64 [] (a scalar)
scale_bits = (scale.view(np.uint32) >> 16).astype("<u2")
assert np.array_equal((scale_bits.astype(np.uint32) << 16).view(np.float32), scale)


def spec(dtype: str, shape, array: np.ndarray) -> "safetensors.TensorSpec":
    array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<")))
    keep.append(array)  # the serializer reads through the pointer: keep the array alive
    return safetensors.TensorSpec(dtype=dtype, shape=list(shape), data_ptr=array.ctypes.data,
                                  data_len=array.nbytes)


keep: list[np.ndarray] = []
tensors = {
    "weight": spec("float32", weight.shape, weight),
    "scale": spec("bfloat16", scale.shape, scale_bits),
    "ids": spec("int64", ids.shape, ids),
    "step": spec("int64", step.shape, step),
}
safetensors.serialize_file(tensors, OUT, {"source": "tools/write_safetensors_sample.py"})
print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")
