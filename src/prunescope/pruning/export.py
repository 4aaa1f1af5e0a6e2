"""A pruned variant exported as a checkpoint that other tools load without prunescope.

The artifact (bit-packed masks, SparseGPT's kept values) is compact but only prunescope reads it; an export is the
base model with the artifact applied, as a standard transformers folder (AutoModelForCausalLM.from_pretrained,
AutoTokenizer.from_pretrained), with export.json naming the variant, the format and the artifact it came from.

compressed-tensors: the same checkpoint with every pruned Linear stored in compressed-tensors' sparse format
(sparse-bitmask; sparse-24-bitmask for 2:4), as llm-compressor wrote sparse models for vLLM. compressed-tensors removed
its sparse compressors after 0.14, and 0.14.0.1, the last with them, requires transformers < 5 (this project runs 5),
so the compression runs in a venv of its own (compressed_tensors_peer.py, with the package's own compressors).
Readers (tested): compressed-tensors 0.14's decompressor for both formats, transformers 4.57's from_pretrained for
sparse-24-bitmask only (compressed_tensors_peer.load); transformers 5 has no sparse decompression, and vLLM reads
sparse-24-bitmask before v0.19.1 only (not run here).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from prunescope.data.fetch import REPOSITORY
from prunescope.io import atomic_path, sha256_file, write_result
from prunescope.pruning import compressed_tensors_peer
from prunescope.pruning.artifact import MANIFEST, read_manifest, write_pruned_checkpoint

SAFETENSORS = "safetensors"
COMPRESSED_TENSORS = "compressed-tensors"
EXPORT_FORMATS = (SAFETENSORS, COMPRESSED_TENSORS)
EXPORT_MANIFEST = "export.json"
# the venv `make export FORMAT=compressed-tensors` (and `make test`) creates, beside the project's own
COMPRESSED_TENSORS_PYTHON = REPOSITORY / ".venv-compressed-tensors" / "bin" / "python"


def check_export_format(fmt: str) -> None:
    """One clear error for a format this module cannot write (the workflow calls it before planning a job)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(EXPORT_FORMATS)}")


def export_variant(model_dir: str | os.PathLike, dtype: str, artifact_dir: str | os.PathLike,
                   out_dir: str | os.PathLike, fmt: str = SAFETENSORS,
                   compressed_tensors_python: str | os.PathLike = COMPRESSED_TENSORS_PYTHON) -> None:
    """Write the prepared model at model_dir pruned by the artifact to out_dir, atomically, in format `fmt`.

    safetensors: write_pruned_checkpoint's sharded checkpoint (one shard per decoder block, read and written one
    block at a time, so host memory holds one block beside the packed masks), the tokenizer files and
    export.json. compressed-tensors: that checkpoint, written to a temporary folder, compressed shard by shard by
    compressed_tensors_python (the python of compressed-tensors 0.14.0.1's venv). The artifact is verified (hashes,
    layer names, shapes, dtypes) before anything is written; a bad one leaves out_dir as it was.
    """
    check_export_format(fmt)
    if fmt == COMPRESSED_TENSORS and not Path(compressed_tensors_python).is_file():  # before any block is written
        raise FileNotFoundError(f"compressed-tensors' python {compressed_tensors_python} does not exist: "
                                f"`make export FORMAT={COMPRESSED_TENSORS}` creates its venv")
    manifest = read_manifest(artifact_dir)
    with atomic_path(out_dir, directory=True) as folder:
        if fmt == SAFETENSORS:
            write_dense_checkpoint(model_dir, dtype, artifact_dir, folder)
            peer = {}
        else:
            with tempfile.TemporaryDirectory(prefix=".dense.", dir=folder.parent) as work:
                write_dense_checkpoint(model_dir, dtype, artifact_dir, Path(work) / "dense")
                peer = compress_checkpoint(compressed_tensors_python, Path(work), folder, manifest)
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
            **peer,
        }
        write_result(folder / EXPORT_MANIFEST, record, written_as=Path(out_dir) / EXPORT_MANIFEST)


def write_dense_checkpoint(model_dir, dtype: str, artifact_dir, folder) -> None:
    """The pruned model as a standard transformers folder: weights (write_pruned_checkpoint) and tokenizer."""
    from transformers import AutoTokenizer

    write_pruned_checkpoint(model_dir, dtype, artifact_dir, folder)
    # the prepared tokenizer as saved, not load_tokenizer's, which adds a pad token for batched scoring
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)


def compress_checkpoint(python: str | os.PathLike, work: Path, out: Path, manifest: dict) -> dict:
    """The dense checkpoint in work/dense with its pruned Linears compressed into out by compressed-tensors in its
    own venv; what it wrote (sparsity config, versions) for export.json."""
    targets = work / "targets.json"
    targets.write_text(json.dumps([layer["name"] for layer in manifest["layers"]]))
    command = [str(python), compressed_tensors_peer.__file__, "write", str(work / "dense"), str(out),
               "--structure", manifest["structure"], "--targets", str(targets)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"compressed-tensors failed ({' '.join(command)}):\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])
