from prunescope.config import evaluation_params
from prunescope.io import read_result, write_json
from prunescope.reporting.nsa import (
    causal_table,
    drop_table,
    guided_table,
    layer_share_table,
    nsa_metrics,
    pairing_table,
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
    drops, causal, pairing = drop_table(i.compare, results), causal_table(i.causal), pairing_table(i.causal)
    gains = guided_table(results, guided, p.evaluation["bootstrap_iters"], seed=0)
    layers = layer_share_table(i.associations)
    write_csv(drops, o.drops)
    write_csv(gains, o.guided)
    write_markdown(drops, causal, pairing, gains, layers, o.markdown)
    write_json(o.metrics, nsa_metrics(drops, causal, pairing, gains, layers))
    plot_drop_scatter(drops, o.scatter_png, o.scatter_svg)
    plot_guided(gains, o.guided_png, o.guided_svg)
    plot_causal_curve(causal, o.causal_png, o.causal_svg)
    plot_pairing(pairing, o.pairing_png, o.pairing_svg)
    for paths, png, svg in zip(p.heatmap_inputs, o.heatmap_png, o.heatmap_svg, strict=True):
        plot_heatmap([read_result(path, "nsa_compare") for path in paths], png, svg)
