# Perplexity of the dense model and every pruned variant on held-out text (the references' first metric): the text
# once per source, its token windows once per model and source, then one job per model variant scores every source.
# The offline text is the gensim Wikipedia dump's held-out articles, which no calibration sample is drawn from.


rule perplexity_text:
    """Documents of one perplexity source: the held-out gensim Wikipedia articles, or a hub evaluation split verbatim
    (WikiText-2 test; the first 1,100 documents of C4's validation shard)."""
    output:
        "data/text/perplexity/{source}.jsonl",
    log:
        "logs/perplexity_text/{source}.log",
    benchmark:
        "benchmarks/perplexity_text/{source}.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("perplexity_text.py"),  # the library code it runs (common.smk)
        spec=lambda wc: config["perplexity"]["sources"][wc.source],
    script:
        "../scripts/perplexity_text.py"


rule perplexity_windows:
    """The text joined and tokenised once, cut into non-overlapping seqlen windows (the first ones, or ones spread
    over the whole text), saved with a checksummed manifest; every variant of the model is scored on this tensor."""
    input:
        text="data/text/perplexity/{source}.jsonl",
        model="data/models/{model}",
    output:
        ids="data/perplexity/{model}/{source}.safetensors",
        manifest="data/perplexity/{model}/{source}.json",
    log:
        "logs/perplexity_windows/{model}/{source}.log",
    benchmark:
        "benchmarks/perplexity_windows/{model}/{source}.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("perplexity_windows.py"),  # the library code it runs (common.smk)
        separator=lambda wc: config["perplexity"]["sources"][wc.source]["separator"],
        pick=lambda wc: config["perplexity"]["sources"][wc.source]["pick"],
        seqlen=config["perplexity"]["seqlen"],
        windows=PERPLEXITY_PARAMS["windows"],
    script:
        "../scripts/perplexity_windows.py"


rule perplexity_dense:
    """Perplexity of the dense model on every perplexity source of the grid (the baseline of every ratio)."""
    input:
        model="data/models/{model}",
        windows=expand("data/perplexity/{{model}}/{source}.safetensors", source=GRID["perplexity_sources"]),
    output:
        expand("results/perplexity/{{model}}/dense/{source}.json", source=GRID["perplexity_sources"]),
    log:
        "logs/perplexity/{model}/dense.log",
    benchmark:
        "benchmarks/perplexity/{model}/dense.tsv"
    conda:
        "../envs/prunescope.yaml"
    threads: config["runtime"]["cpu_threads"]
    resources:
        gpu=1,
    params:
        code=library_code("perplexity.py"),  # the library code it runs (common.smk)
        model_spec=lambda wc: config["models"][wc.model],
        sources=GRID["perplexity_sources"],
        perplexity=PERPLEXITY_PARAMS,
    script:
        "../scripts/perplexity.py"


use rule perplexity_dense as perplexity_pruned with:
    input:
        model="data/models/{model}",
        windows=expand("data/perplexity/{{model}}/{source}.safetensors", source=GRID["perplexity_sources"]),
        pruned="results/pruned/{model}/{method}/{pattern}/{calib}",
    output:
        expand(
            "results/perplexity/{{model}}/{{method}}/{{pattern}}/{{calib}}/{source}.json",
            source=GRID["perplexity_sources"],
        ),
    log:
        "logs/perplexity/{model}/{method}/{pattern}/{calib}.log",
    benchmark:
        "benchmarks/perplexity/{model}/{method}/{pattern}/{calib}.tsv"


use rule perplexity_dense as perplexity_guided with:
    input:
        model="data/models/{model}",
        windows=expand("data/perplexity/{{model}}/{source}.safetensors", source=GRID["perplexity_sources"]),
        pruned="results/guided/pruned/{model}/{protect}/{method}/{pattern}/{calib}",
    output:
        expand(
            "results/perplexity_guided/{{model}}/{{protect}}/{{method}}/{{pattern}}/{{calib}}/{source}.json",
            source=GRID["perplexity_sources"],
        ),
    log:
        "logs/perplexity_guided/{model}/{protect}/{method}/{pattern}/{calib}.log",
    benchmark:
        "benchmarks/perplexity_guided/{model}/{protect}/{method}/{pattern}/{calib}.tsv"


rule perplexity_report:
    """Perplexity per source, dense beside every variant with the ratio to dense; per source and category the
    correlation of the perplexity ratio with the accuracy change across variants, as a table and a scatter."""
    input:
        perplexity=PERPLEXITY_FILES,
        results=EVAL_FILES,
    output:
        csv=report(
            f"{REPORTS}/tables/perplexity.csv",
            caption="../report/perplexity_table.rst",
            category="Perplexity",
            subcategory="Dense and pruned",
        ),
        markdown=f"{REPORTS}/tables/perplexity.md",
        correlation=report(
            f"{REPORTS}/tables/perplexity_vs_accuracy.csv",
            caption="../report/perplexity_vs_accuracy.rst",
            category="Perplexity",
            subcategory="Perplexity vs accuracy",
        ),
        correlation_md=f"{REPORTS}/tables/perplexity_vs_accuracy.md",
        png=report(
            f"{REPORTS}/figures/perplexity_vs_accuracy.png",
            caption="../report/perplexity_scatter.rst",
            category="Perplexity",
            subcategory="Perplexity vs accuracy",
        ),
        svg=f"{REPORTS}/figures/perplexity_vs_accuracy.svg",
    log:
        "logs/report/perplexity_report.log",
    benchmark:
        "benchmarks/report/perplexity_report.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("perplexity_report.py"),  # the library code it runs (common.smk)
        perplexity=PERPLEXITY_PARAMS,
        evaluation=config["evaluation"],
        limit=EVAL_LIMIT,
        pruning=config["pruning"],
    script:
        "../scripts/perplexity_report.py"
