from prunescope.config import perplexity_params
from prunescope.evaluation.perplexity import perplexity_variant
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p = snakemake.params
    perplexity_variant(
        model_dir=snakemake.input.model, dtype=p.model_spec["dtype"], pruned_dir=snakemake.input.get("pruned"),
        sources=p.sources, window_paths=snakemake.input.windows, out_paths=snakemake.output,
        batch_size=p.perplexity["batch_size"], device=job_device(snakemake.threads),
        labels={"method": "dense", "pattern": "none", "calib": "none", **dict(snakemake.wildcards)},
        params=perplexity_params(p.perplexity), offload=snakemake.config["offload"])
