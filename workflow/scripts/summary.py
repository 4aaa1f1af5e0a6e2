from prunescope.io import atomic_path
from prunescope.reporting.summary import run_summary
from prunescope.runlog import job_log

with job_log(snakemake.log[0]) as log:
    i = snakemake.input
    text = run_summary(snakemake.params.grid, i.category_drop, i.floor, i.accuracy, snakemake.params.variants,
                       i.perplexity or None, i.nsa_csv or None, i.nsa_json or None, snakemake.params.left_out)
    with atomic_path(snakemake.output[0]) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("summary:\n%s", text)
