from prunescope.evaluation import EvaluationOptions, VariantModel, evaluate_variant
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p = snakemake.params
    evaluate_variant(
        VariantModel(snakemake.input.model, p.model_spec["dtype"], snakemake.input.get("pruned"),
                     snakemake.config["offload"]),
        EvaluationOptions.from_params(p.evaluation, p.limit),
        datasets=p.datasets, categories=p.categories, task_dirs=snakemake.input.tasks, out_paths=snakemake.output,
        device=job_device(snakemake.threads),
        labels={"method": "dense", "pattern": "none", "calib": "none", **dict(snakemake.wildcards)})
