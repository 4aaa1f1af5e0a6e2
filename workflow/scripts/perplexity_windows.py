from transformers import AutoTokenizer

from prunescope.calibration.sample import perplexity_windows, save_calibration
from prunescope.io import read_jsonl, sha256_file
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    p, source = snakemake.params, snakemake.wildcards.source
    documents = [row["text"] for row in read_jsonl(snakemake.input.text)]
    ids = perplexity_windows(documents, p.separator, AutoTokenizer.from_pretrained(snakemake.input.model), p.seqlen,
                             p.windows, p.pick, source=source)
    save_calibration(ids, snakemake.output.ids, {"source": source, "windows_requested": p.windows, "pick": p.pick,
                                                 "tokenizer": snakemake.wildcards.model,
                                                 "text_sha256": sha256_file(snakemake.input.text)})
