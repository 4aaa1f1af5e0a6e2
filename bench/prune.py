"""Time prune_model on a local model folder: `python bench/prune.py data/models/smollm2-135m --method wanda`.

Calibration is random token ids (seeded): timing does not depend on the text, and this needs no data stage.
"""

from __future__ import annotations

import argparse
import json
import logging

import torch
from transformers import AutoModelForCausalLM

from prunescope.pruning import prune_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--family", default="llama")
    parser.add_argument("--method", default="wanda")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--structure", default="unstructured")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--options", default="{}", help="method options as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    calibration = torch.randint(0, model.config.vocab_size, (args.n, args.seqlen),
                                generator=torch.Generator().manual_seed(0))
    result = prune_model(model, args.family, args.method, args.sparsity, args.structure, calibration,
                         args.batch_size, torch.device(args.device), json.loads(args.options))
    errors = [layer["reconstruction_error"] for layer in result.layers if layer["reconstruction_error"] is not None]
    print(json.dumps({"method": args.method, "n": args.n, "seqlen": args.seqlen, "batch_size": args.batch_size,
                      "threads": torch.get_num_threads(), "seconds": round(result.seconds, 2),
                      "peak_memory_bytes": result.peak_memory_bytes, "layers": len(result.layers),
                      "mean_reconstruction_error": sum(errors) / max(len(errors), 1)}))


if __name__ == "__main__":
    main()
