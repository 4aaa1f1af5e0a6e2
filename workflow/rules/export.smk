# Exports of pruned variants as checkpoints other tools load (prunescope.pruning.export), made on demand:
# `make export VARIANT={model}/{method}/{pattern}/{calib}` or snakemake results/exports/<variant>/<format>.
# Not in `all` and not a DVC stage: nothing downstream reads them, and a full model per variant is disk, not study.
rule export:
    """One pruned variant written as a standalone checkpoint in one format, with export.json naming its source."""
    input:
        model="data/models/{model}",
        artifact=export_artifact,
    output:
        directory("results/exports/{model}/{method}/{pattern}/{calib}/{format}"),
    log:
        "logs/export/{model}/{method}/{pattern}/{calib}/{format}.log",
    benchmark:
        "benchmarks/export/{model}/{method}/{pattern}/{calib}/{format}.tsv"
    wildcard_constraints:
        format=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("export.py"),  # the library code it runs (common.smk)
        dtype=lambda wc: config["models"][wc.model]["dtype"],
    script:
        "../scripts/export.py"
