"""Perplexity, the references' first metric: exp(mean token NLL) over non-overlapping windows of held-out text.

The windows are built once per model and source (calibration.sample.perplexity_windows: the text joined and tokenised
once, as wanda's eval_ppl_wikitext and SparseGPT's C4 evaluation do) and saved like a calibration sample, checksummed;
every variant of the model is then scored on the identical tensor.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from prunescope.calibration.sample import load_calibration
from prunescope.evaluation.options import PerplexityOptions, VariantModel
from prunescope.evaluation.variant import variant_provenance
from prunescope.io import sha256_file, write_result
from prunescope.models.offload import input_device

logger = logging.getLogger(__name__)
WINDOWS_RULE = "perplexity_windows"


@torch.no_grad()
def perplexity(model: torch.nn.Module, windows: torch.LongTensor, batch_size: int) -> dict:
    """exp of the mean NLL of every predicted token of every window (each window predicts its seqlen - 1 next
    tokens from its own prefix), the log-softmax in fp32 whatever the model's dtype, batch_size windows a forward.
    With equal window lengths this is the references' exp(mean over windows of each window's mean loss)."""
    device = input_device(model)
    total, count = torch.zeros((), dtype=torch.float64), 0
    for batch in windows.split(batch_size):
        batch = batch.to(device)
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        nll = -log_probs.gather(-1, batch[:, 1:, None]).squeeze(-1)
        total += nll.double().sum().cpu()
        count += nll.numel()
    mean_nll = float(total) / count
    return {"perplexity": math.exp(mean_nll), "mean_nll": mean_nll, "tokens": count,
            "windows": windows.shape[0], "seqlen": windows.shape[1]}


def perplexity_variant(model: VariantModel, options: PerplexityOptions, *, sources: Sequence[str],
                       window_paths: Sequence[str], out_paths: Sequence[str], device: torch.device,
                       labels: dict) -> None:
    """Perplexity of the dense model, or of a pruned variant, on every source's windows: one result per source, with
    the labels, options.params and provenance (pruning options, environment) that evaluation results carry."""
    provenance = variant_provenance(model.pruned_dir, device)
    windows = [load_calibration(path, WINDOWS_RULE) for path in window_paths]
    with model.loaded(device) as (loaded, _tokenizer):  # already on `device`
        scores = [perplexity(loaded, ids, options.batch_size) for ids in windows]
    for source, path, score, out_path in zip(sources, window_paths, scores, out_paths, strict=True):
        logger.info("%s: perplexity %.3f over %d tokens", source, score["perplexity"], score["tokens"])
        write_result(out_path, {**labels, "source": source, "metrics": score, "params": options.params, **provenance,
                                "inputs": {"windows_sha256": sha256_file(path)}})
