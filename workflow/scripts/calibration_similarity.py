from prunescope.calibration.similarity import calibration_task_similarity
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p = snakemake.params
    calibration_task_similarity(
        calibration_path=snakemake.input.calibration, tokenizer_dir=snakemake.input.model,
        task_dirs=dict(zip(p.datasets, snakemake.input.tasks, strict=True)), templates=p.templates,
        encoder_name=p.similarity["encoder"], chunk_words=p.similarity["chunk_words"],
        batch_size=p.similarity["batch_size"], device=str(job_device(snakemake.threads)),
        out_path=snakemake.output[0],
        labels={"model": snakemake.wildcards.model, "calibration": snakemake.wildcards.calib})
