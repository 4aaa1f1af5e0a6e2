from prunescope.evaluation import PerplexityOptions, VariantModel
from prunescope.evaluation.perplexity import perplexity_variant
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p = snakemake.params
    perplexity_variant(
        VariantModel(snakemake.input.model, p.model_spec["dtype"], snakemake.input.get("pruned"),
                     snakemake.config["offload"]),
        PerplexityOptions.from_params(p.perplexity),
        sources=p.sources, window_paths=snakemake.input.windows, out_paths=snakemake.output,
        device=job_device(snakemake.threads),
        labels={"method": "dense", "pattern": "none", "calib": "none", **dict(snakemake.wildcards)})
