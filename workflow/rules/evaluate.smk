# Zero-shot log-likelihood scoring through lm-eval, on task configs generated from the registry.
# One job scores one model variant on every dataset of the grid: the model is loaded (and its pruning
# artifact applied) once, which dominates the cost at every scale.


rule build_task:
    """The lm-eval task config and the fixed evaluation subsample of one dataset (shared by every model)."""
    input:
        records="data/datasets/{dataset}.jsonl",
        manifest="data/datasets/{dataset}.json",
    output:
        directory("results/tasks/{dataset}"),
    log:
        "logs/build_task/{dataset}.log",
    benchmark:
        "benchmarks/build_task/{dataset}.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("build_task.py"),  # the library code it runs (common.smk)
        template=lambda wc: config["datasets"][wc.dataset]["template"],
        limit=EVAL_LIMIT,
        seed=config["evaluation"]["subsample_seed"],
    script:
        "../scripts/build_task.py"


rule evaluate_dense:
    """Score the dense model on every dataset (the baseline beside every pruned result)."""
    input:
        model="data/models/{model}",
        tasks=TASK_DIRS,
    output:
        expand("results/eval/{{model}}/dense/{dataset}.json", dataset=GRID["datasets"]),
    log:
        "logs/evaluate/{model}/dense.log",
    benchmark:
        "benchmarks/evaluate/{model}/dense.tsv"
    conda:
        "../envs/prunescope.yaml"
    threads: config["runtime"]["cpu_threads"]
    resources:
        gpu=1,
        mem_mb=planned("evaluate"),  # host memory (MB), from the memory plan (common.smk)
        gpu_mem_mb=planned("evaluate", "gpu"),
    params:
        code=library_code("evaluate.py"),  # the library code it runs (common.smk)
        model_spec=lambda wc: config["models"][wc.model],
        datasets=GRID["datasets"],
        categories=[config["datasets"][d]["category"] for d in GRID["datasets"]],
        evaluation=config["evaluation"],
        limit=EVAL_LIMIT,
    script:
        "../scripts/evaluate.py"


use rule evaluate_dense as evaluate_pruned with:
    input:
        model="data/models/{model}",
        tasks=TASK_DIRS,
        pruned="results/pruned/{model}/{method}/{pattern}/{calib}",
    output:
        expand("results/eval/{{model}}/{{method}}/{{pattern}}/{{calib}}/{dataset}.json", dataset=GRID["datasets"]),
    log:
        "logs/evaluate/{model}/{method}/{pattern}/{calib}.log",
    benchmark:
        "benchmarks/evaluate/{model}/{method}/{pattern}/{calib}.tsv"
