# Calibration samples: seeded token windows, identical for every method pruned with the same key.


rule sample_calibration:
    """The reference sampling rule: random documents longer than seqlen, a random seqlen window of each."""
    input:
        text=lambda wc: f"data/text/{parse_calibration_key(wc.calib)['source']}.jsonl",
        model="data/models/{model}",
        heldout=heldout_texts,
    output:
        ids="data/calibration/{model}/{calib}.safetensors",
        manifest="data/calibration/{model}/{calib}.json",
    log:
        "logs/sample_calibration/{model}/{calib}.log",
    benchmark:
        "benchmarks/sample_calibration/{model}/{calib}.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("sample_calibration.py"),  # the library code it runs (common.smk)
        key=lambda wc: parse_calibration_key(wc.calib),
    script:
        "../scripts/sample_calibration.py"


rule calibration_similarity:
    """How close one calibration sample is to each evaluated dataset: sentence-embedding cosine and vocabulary
    overlap, for the calibration analysis."""
    input:
        calibration="data/calibration/{model}/{calib}.safetensors",
        model="data/models/{model}",
        tasks=TASK_DIRS,
    output:
        "results/similarity/{model}/{calib}.json",
    log:
        "logs/calibration_similarity/{model}/{calib}.log",
    benchmark:
        "benchmarks/calibration_similarity/{model}/{calib}.tsv"
    conda:
        "../envs/prunescope.yaml"
    threads: config["runtime"]["cpu_threads"]
    params:
        code=library_code("calibration_similarity.py"),  # the library code it runs (common.smk)
        datasets=GRID["datasets"],
        templates={dataset: config["datasets"][dataset]["template"] for dataset in GRID["datasets"]},
        similarity=config["similarity"],
    script:
        "../scripts/calibration_similarity.py"
