from pathlib import Path

from prunescope.config import calibration_key, evaluation_params, perplexity_params
from prunescope.data.prepare import read_dataset
from prunescope.reporting.claims import Settings, all_claims, write_claims
from prunescope.reporting.floor import above_floor, at_floor_by_model, floor_table, own_choice_datasets
from prunescope.reporting.nsa import drop_table
from prunescope.reporting.perplexity import load_perplexity, perplexity_table, variant_points
from prunescope.reporting.tables import calibration_group, load_results
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    expected = evaluation_params(p.evaluation, p.limit)
    results, guided = load_results(i.results, expected, p.pruning), load_results(i.guided, expected, p.pruning)
    settings = Settings(**p.claims)
    own_choices = own_choice_datasets({Path(path).stem: read_dataset(path) for path in i.records})
    floors = floor_table(results, settings.alpha, own_choices)  # as the aggregate rule, from the same results
    kept = above_floor(results, floors)  # no accuracy claim draws on an at-floor dataset
    points = variant_points(perplexity_table(load_perplexity(i.perplexity, perplexity_params(p.perplexity),
                                                             p.pruning)), kept)
    drops = above_floor(drop_table(i.compare, results), floors) if len(i.compare) else None  # None: no NSA
    base = calibration_key(p.base["source"], p.base["format"], p.base["nsamples"], p.base["seqlen"], p.base["seed"])
    table = all_claims(results, guided, points, drops, i.causal, p.sources,
                       calibration_group(base), p.grid, settings, floors)
    write_claims(table, o.csv, o.markdown, o.metrics, settings, at_floor_by_model(floors))
