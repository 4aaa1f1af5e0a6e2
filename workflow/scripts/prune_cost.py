from prunescope.reporting.cost import prune_cost_table
from prunescope.reporting.tables import write_csv, write_markdown
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    table = prune_cost_table(snakemake.input.artifacts, snakemake.input.measurements)
    write_csv(table, snakemake.output.csv)
    write_markdown(table, snakemake.output.markdown, "What each pruning run cost (results/prune_runs, manifests).")
