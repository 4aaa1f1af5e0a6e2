import pandas as pd

from prunescope.reporting.figures import plot_accuracy_change
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    table = pd.read_csv(snakemake.input[0], keep_default_na=False, na_values=[""])
    plot_accuracy_change(table, snakemake.output.png, snakemake.output.svg, snakemake.params.variants)
