# Zero-shot log-likelihood scoring through lm-eval, on task configs generated from the registry.


rule build_task:
    """The lm-eval task config and the fixed evaluation subsample of one dataset (shared by every model)."""
    input:
        "data/datasets/{dataset}.jsonl",
    output:
        directory("results/tasks/{dataset}"),
    params:
        template=lambda wc: config["datasets"][wc.dataset]["template"],
        limit=GRID["eval_limit"],
        seed=config["evaluation"]["subsample_seed"],
    log:
        "logs/build_task/{dataset}.log",
    script:
        "../scripts/build_task.py"


rule evaluate_dense:
    """Score the dense model on one dataset (the baseline beside every pruned result)."""
    input:
        model="data/models/{model}",
        task="results/tasks/{dataset}",
    output:
        "results/eval/{model}/dense/{dataset}.json",
    params:
        model_spec=lambda wc: config["models"][wc.model],
        category=lambda wc: config["datasets"][wc.dataset]["category"],
        evaluation=config["evaluation"],
        limit=GRID["eval_limit"],
    log:
        "logs/evaluate/{model}/dense/{dataset}.log",
    benchmark:
        "benchmarks/evaluate/{model}/dense/{dataset}.tsv"
    threads: config["runtime"]["cpu_threads"]
    resources:
        gpu=1,
    script:
        "../scripts/evaluate.py"


use rule evaluate_dense as evaluate_pruned with:
    input:
        model="data/models/{model}",
        task="results/tasks/{dataset}",
        pruned="results/pruned/{model}/{method}/{pattern}/{calib}",
    output:
        "results/eval/{model}/{method}/{pattern}/{calib}/{dataset}.json",
    log:
        "logs/evaluate/{model}/{method}/{pattern}/{calib}/{dataset}.log",
    benchmark:
        "benchmarks/evaluate/{model}/{method}/{pattern}/{calib}/{dataset}.tsv"
