import pandas as pd

from prunescope.reporting.figures import plot_accuracy_change
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    plot_accuracy_change(pd.read_csv(snakemake.input[0]), snakemake.output.png, snakemake.output.svg)
