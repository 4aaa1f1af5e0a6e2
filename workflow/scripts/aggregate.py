from pathlib import Path

from prunescope.config import evaluation_params, perplexity_params
from prunescope.data.prepare import read_dataset
from prunescope.io import write_json
from prunescope.reporting.drops import category_drop_table, write_category_drop
from prunescope.reporting.floor import answer_shares, floor_table, own_choice_datasets, write_floor
from prunescope.reporting.perplexity import perplexity_summary
from prunescope.reporting.sweeps import accuracy_changes, calibration_headline
from prunescope.reporting.tables import accuracy_table, headline_metrics, load_results, write_table
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    o, p = snakemake.output, snakemake.params
    results = load_results(snakemake.input.results, evaluation_params(p.evaluation, p.limit), p.pruning)
    own_choices = own_choice_datasets({Path(path).stem: read_dataset(path) for path in snakemake.input.records})
    floors = floor_table(results, p.alpha, own_choices)
    write_floor(floors, o.floor_csv, o.floor_markdown, p.alpha)
    table = accuracy_table(results, floors, answer_shares(results, own_choices=own_choices))
    drops = category_drop_table(results, p.bootstrap_iters, p.bootstrap_seed, floors)
    write_table(table, o.csv, o.markdown, o.latex)
    write_category_drop(drops, o.drop_csv, o.drop_markdown, o.drop_latex, p.bootstrap_iters)
    perplexity = perplexity_summary(snakemake.input.perplexity, perplexity_params(p.perplexity), p.pruning, results)
    write_json(o.metrics, {"accuracy": headline_metrics(table), **perplexity,
                           **calibration_headline(accuracy_changes(results), p.base, snakemake.input.similarity)})
