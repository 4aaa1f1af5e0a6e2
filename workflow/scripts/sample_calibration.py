from transformers import AutoTokenizer

from prunescope.calibration.sample import pack_calibration, sample_calibration, save_calibration
from prunescope.io import read_jsonl, sha256_file
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    key = snakemake.params.key
    tokenizer = AutoTokenizer.from_pretrained(snakemake.input.model)
    rows = read_jsonl(snakemake.input.text)
    shape = (tokenizer, key["nsamples"], key["seqlen"], key["seed"])
    if key["format"] == "raw":
        heldout = [row["text"] for path in snakemake.input.heldout for row in read_jsonl(path)]
        ids = sample_calibration([row["text"] for row in rows], *shape, source=key["source"], heldout=heldout)
    else:
        ids = pack_calibration(rows, key["format"], *shape, source=key["source"])
    manifest = {**key, "tokenizer": snakemake.wildcards.model, "text_sha256": sha256_file(snakemake.input.text)}
    save_calibration(ids, snakemake.output.ids, manifest)
