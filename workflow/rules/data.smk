# Evaluation datasets normalised to one JSONL schema, and raw text for calibration.


def dataset_source_input(wc):
    source = config["datasets"][wc.dataset]["source"]
    if "archive" in source:
        return archive_file(source["archive"])
    if source["kind"] == "local" and source["path"]:
        return source["path"]
    return []


rule prepare_dataset:
    """One dataset of the registry -> data/datasets/{dataset}.jsonl ({id, input, choices, label, ...})."""
    input:
        dataset_source_input,
    output:
        "data/datasets/{dataset}.jsonl",
    params:
        spec=lambda wc: config["datasets"][wc.dataset],
        seed=config["evaluation"]["subsample_seed"],
    log:
        "logs/prepare_dataset/{dataset}.log",
    script:
        "../scripts/prepare_dataset.py"


rule calibration_text:
    """Documents of one calibration source (gensim's bundled corpora offline, hub text datasets online)."""
    output:
        temp("data/text/{source}.jsonl"),
    params:
        spec=lambda wc: config["calibration_sources"][wc.source],
    log:
        "logs/calibration_text/{source}.log",
    script:
        "../scripts/calibration_text.py"
