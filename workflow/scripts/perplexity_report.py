from prunescope.config import evaluation_params, perplexity_params
from prunescope.reporting.perplexity import (
    correlation_table,
    load_perplexity,
    perplexity_table,
    plot_perplexity_vs_accuracy,
    variant_points,
    write_perplexity_tables,
)
from prunescope.reporting.tables import load_results
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    table = perplexity_table(load_perplexity(i.perplexity, perplexity_params(p.perplexity), p.pruning))
    points = variant_points(table, load_results(i.results, evaluation_params(p.evaluation, p.limit),
                                                p.pruning))
    correlation = correlation_table(points)
    write_perplexity_tables(table, correlation, o.csv, o.markdown, o.correlation, o.correlation_md)
    plot_perplexity_vs_accuracy(points, correlation, o.png, o.svg)
