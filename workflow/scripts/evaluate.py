from prunescope.evaluation import evaluate_and_record
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p, wc = snakemake.params, dict(snakemake.wildcards)
    evaluate_and_record(
        model_dir=snakemake.input.model, dtype=p.model_spec["dtype"], pruned_dir=snakemake.input.get("pruned"),
        task_dir=snakemake.input.task, batch_size=p.evaluation["batch_size"],
        bootstrap_iters=p.evaluation["bootstrap_iters"], device=job_device(snakemake.threads),
        labels={"method": "dense", "pattern": "none", "calib": "none", **wc, "category": p.category},
        params={"evaluation": dict(p.evaluation), "limit": p.limit}, out_path=snakemake.output[0])
