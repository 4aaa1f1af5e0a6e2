from prunescope.config import evaluation_params, perplexity_params
from prunescope.reporting.perplexity import load_perplexity
from prunescope.reporting.sweeps import (
    accuracy_changes,
    calib_size_table,
    calibration_table,
    owl_table,
    plot_calibration_heatmap,
    plot_sweep,
    sparsity_table,
)
from prunescope.reporting.tables import load_results, write_csv, write_markdown
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    changes = accuracy_changes(load_results(i.results, evaluation_params(p.evaluation, p.limit), p.pruning))
    calibration = calibration_table(changes, p.base, i.similarity)
    sparsity = sparsity_table(changes, p.base, p.sweep_methods)
    sizes = calib_size_table(changes, p.base, p.sweep_methods)
    perplexity = load_perplexity(i.perplexity, perplexity_params(p.perplexity), p.pruning)
    owl = owl_table(changes, p.base, p.owl["methods"], p.owl["sparsities"], perplexity)
    for table, csv, markdown, title in (
            (calibration, o.calibration, o.calibration_md, "Accuracy change per calibration source/format."),
            (sparsity, o.sparsity, o.sparsity_md, "Accuracy change along the sparsity sweep."),
            (sizes, o.calib_size, o.calib_size_md, "Accuracy change along the calibration-size sweeps."),
            (owl, o.owl, o.owl_md, "Accuracy change and perplexity with uniform and with OWL layer sparsity.")):
        write_csv(table, csv)
        write_markdown(table, markdown, title)
    plot_calibration_heatmap(changes, p.base, o.heatmap_png, o.heatmap_svg)
    plot_sweep(sparsity, "sparsity", "sparsity", o.sparsity_png, o.sparsity_svg)
    plot_sweep(sizes[sizes["seqlen"] == p.base["seqlen"]], "nsamples", "calibration samples", o.nsamples_png,
               o.nsamples_svg)
    plot_sweep(sizes[sizes["nsamples"] == p.base["nsamples"]], "seqlen", "calibration sequence length",
               o.seqlen_png, o.seqlen_svg)
