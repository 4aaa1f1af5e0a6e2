from prunescope.config import evaluation_params
from prunescope.evaluation import evaluate_variant
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p = snakemake.params
    evaluate_variant(
        model_dir=snakemake.input.model, dtype=p.model_spec["dtype"], pruned_dir=snakemake.input.get("pruned"),
        datasets=p.datasets, categories=p.categories, task_dirs=snakemake.input.tasks, out_paths=snakemake.output,
        batch_size=p.evaluation["batch_size"], bootstrap_iters=p.evaluation["bootstrap_iters"],
        device=job_device(snakemake.threads),
        labels={"method": "dense", "pattern": "none", "calib": "none", **dict(snakemake.wildcards)},
        params=evaluation_params(p.evaluation, p.limit), offload=snakemake.config["offload"])
