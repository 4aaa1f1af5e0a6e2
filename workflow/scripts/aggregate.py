from prunescope.io import write_json
from prunescope.reporting.tables import accuracy_table, headline_metrics, load_results, write_table
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    expected = {"evaluation": dict(snakemake.params.evaluation), "limit": snakemake.params.limit}
    table = accuracy_table(load_results(snakemake.input, expected))
    write_table(table, snakemake.output.csv, snakemake.output.markdown)
    write_json(snakemake.output.metrics, headline_metrics(table))
