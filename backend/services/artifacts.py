"""Draft artifact storage on the control plane: sha256-verified uploads, safetensors only.

The control plane never deserialises tensors (no torch here); it checks that the upload is a
well-formed safetensors file (length-prefixed JSON header describing every tensor, no code),
of the declared size and sha256, before any worker may download it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

MAX_HEADER_BYTES = 100 * 1024 * 1024
SAFETENSORS_DTYPES = {
    "F64",
    "F32",
    "F16",
    "BF16",
    "I64",
    "I32",
    "I16",
    "I8",
    "U8",
    "BOOL",
    "F8_E4M3",
    "F8_E5M2",
}


class ArtifactRejected(ValueError):
    """The upload is not the declared, well-formed safetensors file."""


def check_safetensors_header(path: Path) -> int:
    """Validate the header; returns the number of tensors. Raises ``ArtifactRejected``."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ArtifactRejected("not a safetensors file: shorter than its header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise ArtifactRejected("not a safetensors file: header length out of range")
        try:
            header = json.loads(handle.read(header_len))
        except ValueError as exc:
            raise ArtifactRejected(f"not a safetensors file: header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ArtifactRejected("not a safetensors file: header is not an object")
    data_bytes = size - 8 - header_len
    tensors = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPES:
            raise ArtifactRejected(f"tensor {name!r}: missing or unknown dtype")
        offsets = entry.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes
        ):
            raise ArtifactRejected(f"tensor {name!r}: data offsets outside the file")
        tensors += 1
    if tensors == 0:
        raise ArtifactRejected("safetensors file holds no tensors")
    return tensors


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def weights_path(self, version: str) -> Path:
        return self.root / version / "draft.safetensors"

    def delete(self, version: str) -> None:
        """Remove a version's weights (retention); absent files are already gone."""
        shutil.rmtree(self.weights_path(version).parent, ignore_errors=True)

    async def receive(
        self, version: str, chunks: AsyncIterator[bytes], expected_sha256: str, expected_bytes: int
    ) -> Path:
        """Stream an upload to disk, then verify size, sha256 and format; only then make it visible."""
        final = self.weights_path(version)
        final.parent.mkdir(parents=True, exist_ok=True)
        # One partial file per upload: two concurrent uploads of a version never write into one file.
        partial = final.with_name(f"{final.name}.{uuid.uuid4().hex}.partial")
        digest = hashlib.sha256()
        received = 0
        try:
            with partial.open("wb") as handle:
                async for chunk in chunks:
                    received += len(chunk)
                    if received > expected_bytes:
                        raise ArtifactRejected(f"upload is larger than the declared {expected_bytes} bytes")
                    digest.update(chunk)
                    handle.write(chunk)
            if received != expected_bytes:
                raise ArtifactRejected(f"upload is {received} bytes, declared {expected_bytes}")
            if digest.hexdigest() != expected_sha256:
                raise ArtifactRejected("sha256 of the upload does not match the registration")
            check_safetensors_header(partial)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, final)
        return final
