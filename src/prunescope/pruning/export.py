"""A pruned variant exported as a checkpoint that other tools load without prunescope.

The artifact (bit-packed masks, SparseGPT's kept values) is compact but only prunescope reads it; an export is the
base model with the artifact applied, as a standard transformers folder (AutoModelForCausalLM.from_pretrained,
AutoTokenizer.from_pretrained), with export.json naming the variant, the format and the artifact it came from.

compressed-tensors' sparse format (sparse-bitmask, sparse-24-bitmask) is not offered: compressed-tensors removed its
sparse compressors after 0.14 (0.14.0.1, the last with them, requires transformers < 5, which this project does not
run), transformers' integration (5.25 with compressed-tensors 0.20.1) has no sparse decompression, and vLLM refuses
Sparse24 models from v0.19.1 on.
"""

from __future__ import annotations

import os
from pathlib import Path

from prunescope.io import atomic_path, sha256_file, write_result
from prunescope.pruning.artifact import MANIFEST, read_manifest, write_pruned_checkpoint

SAFETENSORS = "safetensors"
EXPORT_FORMATS = (SAFETENSORS,)
EXPORT_MANIFEST = "export.json"


def check_export_format(fmt: str) -> None:
    """One clear error for a format this module cannot write (the workflow calls it before planning a job)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(EXPORT_FORMATS)}")


def export_variant(model_dir: str | os.PathLike, dtype: str, artifact_dir: str | os.PathLike,
                   out_dir: str | os.PathLike, fmt: str = SAFETENSORS) -> None:
    """Write the prepared model at model_dir pruned by the artifact to out_dir, atomically, in format `fmt`.

    safetensors: write_pruned_checkpoint's sharded checkpoint (one shard per decoder block, read and written one
    block at a time, so host memory holds one block beside the packed masks), the tokenizer files and
    export.json. The artifact is verified (hashes, layer names, shapes, dtypes) before anything is written; a bad
    one leaves out_dir as it was.
    """
    check_export_format(fmt)
    from transformers import AutoTokenizer

    manifest = read_manifest(artifact_dir)
    with atomic_path(out_dir, directory=True) as folder:
        write_pruned_checkpoint(model_dir, dtype, artifact_dir, folder)
        # the prepared tokenizer as saved, not load_tokenizer's, which adds a pad token for batched scoring
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
        record = {
            "format": fmt,
            "dtype": dtype,
            "variant": {key: manifest.get(key) for key in ("model", "method", "pattern", "calibration")},
            "structure": manifest["structure"],
            "sparsity": manifest["sparsity"],
            "achieved_sparsity": manifest["achieved_sparsity"],
            "source_artifact": {"path": os.path.normpath(artifact_dir),
                                "manifest_sha256": sha256_file(Path(artifact_dir) / MANIFEST)},
            "files": {path.name: sha256_file(path) for path in sorted(folder.iterdir())},
        }
        write_result(folder / EXPORT_MANIFEST, record, written_as=Path(out_dir) / EXPORT_MANIFEST)
