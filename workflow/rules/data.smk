# Evaluation datasets normalised to one JSONL schema, their calibration pools, and calibration text or pairs.
# Intermediate files stay as a cache (see fetch_archive): regenerating one would look newer than its users.


rule prepare_dataset:
    """One dataset of the registry -> data/datasets/{dataset}.jsonl ({id, input, choices, label, ...})."""
    input:
        dataset_source_input,
    output:
        records="data/datasets/{dataset}.jsonl",
        manifest="data/datasets/{dataset}.json",
    log:
        "logs/prepare_dataset/{dataset}.log",
    benchmark:
        "benchmarks/prepare_dataset/{dataset}.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("prepare_dataset.py"),  # the library code it runs (common.smk)
        spec=lambda wc: config["datasets"][wc.dataset],
        seed=config["evaluation"]["subsample_seed"],
        part="evaluation",
    script:
        "../scripts/prepare_dataset.py"


use rule prepare_dataset as prepare_train_pool with:
    output:
        records="data/train/{dataset}.jsonl",
        manifest="data/train/{dataset}.json",
    log:
        "logs/prepare_train_pool/{dataset}.log",
    benchmark:
        "benchmarks/prepare_train_pool/{dataset}.tsv"
    params:
        code=library_code("prepare_dataset.py"),  # the library code it runs (common.smk)
        spec=lambda wc: config["datasets"][wc.dataset],
        seed=config["evaluation"]["subsample_seed"],
        part="train",


rule calibration_text:
    """Documents or question-answer pairs of one calibration source (offline: gensim's corpora and the stand-ins'
    held-out pools; online: hub text datasets, GSM8K and the registry's train splits)."""
    input:
        lambda wc: (
            expand("data/train/{dataset}.{ext}", dataset=pool_dataset(wc), ext=["jsonl", "json"])
            if pool_dataset(wc)
            else []
        ),
    output:
        "data/text/{source}.jsonl",
    log:
        "logs/calibration_text/{source}.log",
    benchmark:
        "benchmarks/calibration_text/{source}.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("calibration_text.py"),  # the library code it runs (common.smk)
        spec=lambda wc: config["calibration_sources"][wc.source],
        template=lambda wc: config["datasets"][pool_dataset(wc)]["template"] if pool_dataset(wc) else None,
    script:
        "../scripts/calibration_text.py"
