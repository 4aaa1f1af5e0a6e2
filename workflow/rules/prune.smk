# Pruning through the sequential block driver; the artifact is bit-packed masks plus a manifest, byte-identical
# across reruns; the run's wall time and peak memory go to a file of their own under results/prune_runs/.


rule prune:
    """Prune one model with one method, pattern and calibration sample."""
    input:
        model="data/models/{model}",
        calibration=calibration_input,
    output:
        artifact=directory("results/pruned/{model}/{method}/{pattern}/{calib}"),
        measurements="results/prune_runs/{model}/{method}/{pattern}/{calib}.json",
    log:
        "logs/prune/{model}/{method}/{pattern}/{calib}.log",
    benchmark:
        "benchmarks/prune/{model}/{method}/{pattern}/{calib}.tsv"
    conda:
        "../envs/prunescope.yaml"
    threads: config["runtime"]["cpu_threads"]
    resources:
        gpu=1,
        mem_mb=planned("prune"),  # host memory (MB), from the memory plan (common.smk)
        gpu_mem_mb=planned("prune", "gpu"),
    params:
        code=library_code("prune.py"),  # the library code it runs (common.smk)
        model_spec=lambda wc: config["models"][wc.model],
        # the options PruneOptions.from_params reads from config["pruning"]: listed as rerun triggers
        method_options=lambda wc: config["pruning"][wc.method],
        owl=config["pruning"]["owl"],
        batch_size=config["pruning"]["calibration_batch_size"],
    script:
        "../scripts/prune.py"
