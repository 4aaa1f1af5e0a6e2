from prunescope.config import evaluation_params
from prunescope.io import read_result, write_json
from prunescope.reporting.nsa import (
    NsaTables,
    causal_table,
    drop_table,
    guided_table,
    layer_share_table,
    nsa_metrics,
    pairing_table,
    paper_overlap_table,
    plot_causal_curve,
    plot_drop_scatter,
    plot_guided,
    plot_heatmap,
    plot_pairing,
    write_markdown,
)
from prunescope.reporting.tables import load_results, write_csv
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    expected = evaluation_params(p.evaluation, p.limit)
    results, guided = load_results(i.results, expected, p.pruning), load_results(i.guided, expected, p.pruning)
    tables = NsaTables(drops=drop_table(i.compare, results), causal=causal_table(i.causal),
                       pairing=pairing_table(i.causal),
                       guided=guided_table(results, guided, p.evaluation["bootstrap_iters"], seed=0),
                       layers=layer_share_table(i.associations), overlap=paper_overlap_table(i.associations))
    write_csv(tables.drops, o.drops)
    write_csv(tables.guided, o.guided)
    write_markdown(tables, o.markdown)
    write_json(o.metrics, nsa_metrics(tables))
    plot_drop_scatter(tables.drops, o.scatter_png, o.scatter_svg)
    plot_guided(tables.guided, o.guided_png, o.guided_svg)
    plot_causal_curve(tables.causal, o.causal_png, o.causal_svg)
    plot_pairing(tables.pairing, o.pairing_png, o.pairing_svg)
    for paths, png, svg in zip(p.heatmap_inputs, o.heatmap_png, o.heatmap_svg, strict=True):
        plot_heatmap([read_result(path, "nsa_compare") for path in paths], png, svg)
