"""Calibration samples: seeded token windows drawn by the reference rule, saved with a checksummed manifest.

Every method pruned with the same calibration key must see the identical tensor, so sampling is a pure function
of (documents, tokenizer, nsamples, seqlen, seed) and the saved file is verified on every load.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prunescope.io import atomic_path, read_result, sha256_file, verify_sha256, write_result

logger = logging.getLogger(__name__)

DRAWS_PER_SAMPLE = 100  # give up after this many document draws per requested sample (plus a fixed allowance)
EXTRA_DRAWS = 1000
TENSOR_KEY = "input_ids"
WINDOW_PICKS = ("first", "spread")  # which of a perplexity text's windows are kept (perplexity_windows)
FEWSHOT_SEPARATOR = "\n\n"
PAIR_FORMATS = {  # the text of one pair in each format
    "zero": "{question}",
    "single": "{question} {answer}",
    "icl": "{question} {answer}",
    "cot": "{question} {rationale} So the answer is {answer}.",
}


class CalibrationError(ValueError):
    """A calibration sample that cannot be drawn, or a saved one that does not match its manifest."""


def sample_calibration(documents: list[str], tokenizer, nsamples: int, seqlen: int, seed: int, *,
                       source: str = "calibration text", heldout: Sequence[str] = ()) -> torch.LongTensor:
    """(nsamples, seqlen) token ids: draw a random document, keep it only if it has more than seqlen tokens,
    take a random seqlen window of it; repeat. A document may be drawn more than once (as in the reference).

    heldout: perplexity documents that must not be in this pool (check_heldout_excluded).
    Raises CalibrationError rather than return fewer or shorter samples than asked for.
    """
    if not documents:
        raise CalibrationError(f"calibration source {source} has no documents")
    check_heldout_excluded(documents, heldout, source)
    rng = random.Random(seed)
    tokenised: dict[int, list[int]] = {}  # a document drawn again is not tokenised again
    windows, draws = [], 0
    max_draws = DRAWS_PER_SAMPLE * nsamples + EXTRA_DRAWS
    while len(windows) < nsamples:
        if draws == max_draws:
            raise CalibrationError(_shortage_message(documents, tokenizer, tokenised, source, nsamples, seqlen, draws))
        draws += 1
        index = rng.randrange(len(documents))
        if index not in tokenised:
            tokenised[index] = _token_ids(tokenizer, documents[index])
        ids = tokenised[index]
        if len(ids) <= seqlen:
            continue
        start = rng.randrange(len(ids) - seqlen)
        windows.append(ids[start:start + seqlen])
    logger.info("calibration %s: %d x %d tokens from %d draws over %d distinct documents (seed %d)",
                source, nsamples, seqlen, draws, len(tokenised), seed)
    return torch.tensor(windows, dtype=torch.long)


def check_heldout_excluded(documents: Sequence[str], heldout: Sequence[str], source: str) -> None:
    """One CalibrationError if any held-out perplexity document is, or is inside, a calibration document: perplexity
    on text the pruning was calibrated on would flatter every calibrated method."""
    for index, held in enumerate(heldout):
        held = held.strip()
        leak = next((row for row, document in enumerate(documents, start=1) if held and held in document), None)
        if leak is not None:
            raise CalibrationError(
                f"calibration source {source}: document {leak} (1-based) contains held-out perplexity document "
                f"{index + 1} ({held[:60]!r}...): the perplexity text must never be calibrated on; rebuild the "
                "calibration text (delete data/text/ and rerun), whose extraction leaves the held-out articles out")


def pack_calibration(pairs: list[dict], fmt: str, tokenizer, nsamples: int, seqlen: int, seed: int, *,
                     source: str = "calibration pairs") -> torch.LongTensor:
    """(nsamples, seqlen) token ids from question-answer pairs in a task format, for the companion paper's study.

    zero: the question alone; single: question and answer; icl: question-answer pairs forming one few-shot
    prompt; cot: as icl, with the rationale before the answer. Pairs are taken in a seeded random order, each
    at most once, and concatenated until a sample holds seqlen tokens (its last pair is cut there): zero and
    single pairs are separate documents joined by the EOS token; icl and cot pairs are joined by a blank line,
    the separator of a few-shot prompt. Raises CalibrationError rather than reuse pairs or return short samples.
    """
    if fmt not in PAIR_FORMATS:
        raise CalibrationError(f"unknown calibration format {fmt!r} for {source}: one of {', '.join(PAIR_FORMATS)}")
    if fmt == "cot":
        missing = [row for row, pair in enumerate(pairs, start=1) if not pair.get("rationale")]
        if missing:
            raise CalibrationError(f"calibration source {source} has no rationale in {len(missing)} of {len(pairs)} "
                                   f"pairs (rows {missing[:5]}, 1-based): the cot format needs one in every pair")
    separator = _separator_ids(tokenizer, fmt, source)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    windows, current, total = [], [], 0
    for index in order:
        if current:
            current += separator
        ids = tokenizer(PAIR_FORMATS[fmt].format(**pairs[index]), add_special_tokens=False)["input_ids"]
        current += ids
        total += len(ids)
        if len(current) >= seqlen:
            windows.append(current[:seqlen])
            current = []
            if len(windows) == nsamples:
                break
    else:
        raise CalibrationError(
            f"calibration source {source} cannot supply {nsamples} samples of {seqlen} tokens in format {fmt}: its "
            f"{len(pairs)} pairs hold {total} tokens, enough for {len(windows)}. Use fewer samples, a shorter seqlen, "
            "or a larger pool (datasets.<name>.train in params.yaml)")
    logger.info("calibration %s (%s): %d x %d tokens from %d of %d pairs (seed %d)", source, fmt, nsamples, seqlen,
                order.index(index) + 1, len(pairs), seed)
    return torch.tensor(windows, dtype=torch.long)


def perplexity_windows(documents: Sequence[str], separator: str, tokenizer, seqlen: int, windows: int | None,
                       pick: str = "first", *, source: str = "perplexity text") -> torch.LongTensor:
    """(windows, seqlen) token ids: the documents joined by `separator` and tokenised once (the tokenizer's own
    special tokens, as the references), cut into consecutive non-overlapping seqlen windows, of which `windows` are
    kept (None: every whole window): the first ones (pick "first", the references' C4 rule), or ones evenly spaced
    from the first window to the last (pick "spread": a few windows still cover every document, not only the first
    one). A short text is an error, never fewer windows."""
    if pick not in WINDOW_PICKS:
        raise CalibrationError(f"perplexity source {source}: unknown window pick {pick!r}: one of "
                               f"{', '.join(WINDOW_PICKS)}")
    ids = tokenizer(separator.join(documents), return_tensors="pt")["input_ids"][0]
    available = ids.numel() // seqlen
    if available == 0 or (windows is not None and available < windows):
        raise CalibrationError(f"perplexity source {source} holds {ids.numel()} tokens: {available} windows of "
                               f"{seqlen}, fewer than the {windows or 1} asked for (perplexity.windows, "
                               "perplexity.seqlen in params.yaml)")
    every = ids[: available * seqlen].reshape(available, seqlen)
    count = available if windows is None else windows
    if pick == "first":
        chosen = list(range(count))
    else:  # steps of (available - 1) / (count - 1) >= 1 windows: distinct, increasing, first and last included
        chosen = [k * (available - 1) // max(count - 1, 1) for k in range(count)]
    logger.info("perplexity %s: %d x %d tokens (%s of %d windows)", source, count, seqlen, pick, available)
    return every[chosen].clone()


def _separator_ids(tokenizer, fmt: str, source: str) -> list[int]:
    if fmt in ("icl", "cot"):
        return tokenizer(FEWSHOT_SEPARATOR, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is None:
        raise CalibrationError(f"calibration format {fmt} of {source} separates documents by the EOS token, and this "
                               "tokenizer has none: use the icl format")
    return [tokenizer.eos_token_id]


def _token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def _shortage_message(documents: list[str], tokenizer, tokenised: dict[int, list[int]], source: str, nsamples: int,
                      seqlen: int, draws: int) -> str:
    """Count eligible documents over the whole corpus (only on this error path) so the message is exact."""
    eligible = sum(len(tokenised[i] if i in tokenised else _token_ids(tokenizer, doc)) > seqlen
                   for i, doc in enumerate(documents))
    return (f"calibration source {source} cannot supply {nsamples} samples of {seqlen} tokens: {eligible} of its "
            f"{len(documents)} documents are longer than {seqlen} tokens (gave up after {draws} draws). Use a "
            "smaller seqlen or a source with longer documents")


def save_calibration(input_ids: torch.Tensor, out_path: str | os.PathLike, manifest: dict) -> None:
    """Write the ids as safetensors plus <out_path>.json (manifest + n, seqlen, sha256); byte-identical reruns."""
    if input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
        raise CalibrationError(f"calibration ids must be a 2-D integer tensor, got {input_ids.dtype} "
                               f"{tuple(input_ids.shape)}")
    with atomic_path(out_path) as tmp:
        save_file({TENSOR_KEY: input_ids.to(torch.long).contiguous()}, tmp)
        digest = sha256_file(tmp)
    n, seqlen = input_ids.shape
    write_result(manifest_path(out_path), {**manifest, "n": n, "seqlen": seqlen, "sha256": digest})


def manifest_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def load_calibration(path: str | os.PathLike, rule: str = "sample_calibration") -> torch.LongTensor:
    """The saved ids, after checking its manifest and the file against its sha256 and shape. rule: the rule that
    rebuilds the file (perplexity windows are saved the same way by perplexity_windows)."""
    rebuild = f"delete it and rerun the workflow: the {rule} rule rebuilds it"
    try:
        manifest = read_result(manifest_path(path), rule)
    except OSError as err:
        raise CalibrationError(f"token file {path} has no readable manifest {manifest_path(path)} ({err}): "
                               f"{rebuild}") from err
    verify_sha256(path, manifest["sha256"], f"the {rule} rule rebuilds it")
    input_ids = load_file(path)[TENSOR_KEY]
    if tuple(input_ids.shape) != (manifest["n"], manifest["seqlen"]):
        raise CalibrationError(f"token file {path} holds {tuple(input_ids.shape)} ids, its manifest says "
                               f"({manifest['n']}, {manifest['seqlen']}): {rebuild}")
    return input_ids
