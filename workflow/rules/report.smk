# Tables, figures and headline metrics, from every result of the selected grid.

REPORT_OUTPUTS = [
    "reports/tables/accuracy.csv",
    "reports/tables/accuracy.md",
    "reports/tables/accuracy.tex",
    "reports/tables/category_drop.csv",
    "reports/tables/category_drop.md",
    "reports/tables/category_drop.tex",
    "reports/figures/accuracy_change.png",
    "reports/figures/accuracy_change.svg",
    "reports/metrics.json",
    "reports/claims.csv",
    "reports/claims.md",
    "reports/claims.json",
]


rule aggregate:
    """Per-dataset accuracy table, dense baseline beside every pruned result; the per-category accuracy change
    with its bootstrap CI over examples and calibration seeds (category_drop); the headline metrics (per
    category dense vs pruned and the sentiment drop's rank; the best and worst calibration source; perplexity and
    its correlation with the accuracy change)."""
    input:
        results=EVAL_FILES,
        similarity=SIMILARITY_FILES,
        perplexity=PERPLEXITY_FILES,
    output:
        csv=report(
            "reports/tables/accuracy.csv",
            caption="../report/accuracy_table.rst",
            category="Accuracy",
            subcategory="Main grid",
        ),
        markdown="reports/tables/accuracy.md",
        latex="reports/tables/accuracy.tex",
        drop_csv=report(
            "reports/tables/category_drop.csv",
            caption="../report/category_drop.rst",
            category="Accuracy",
            subcategory="Main grid",
        ),
        drop_markdown="reports/tables/category_drop.md",
        drop_latex="reports/tables/category_drop.tex",
        metrics="reports/metrics.json",
    log:
        "logs/report/aggregate.log",
    benchmark:
        "benchmarks/report/aggregate.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("aggregate.py"),  # the library code it runs (common.smk)
        evaluation=config["evaluation"],
        limit=GRID["eval_limit"],
        pruning=config["pruning"],
        bootstrap_iters=config["evaluation"]["bootstrap_iters"],
        bootstrap_seed=0,
        base=SWEEP_BASE,
        perplexity=PERPLEXITY_PARAMS,
    script:
        "../scripts/aggregate.py"


rule plot_accuracy_change:
    """Accuracy change vs dense with its bootstrap CI, by task category and pruning method and pattern (the main
    grid's variants at the base calibration source and format)."""
    input:
        "reports/tables/category_drop.csv",
    output:
        png=report(
            "reports/figures/accuracy_change.png",
            caption="../report/accuracy_change.rst",
            category="Accuracy",
            subcategory="Main grid",
        ),
        svg="reports/figures/accuracy_change.svg",
    log:
        "logs/report/plot_accuracy_change.log",
    benchmark:
        "benchmarks/report/plot_accuracy_change.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("plot_accuracy_change.py"),  # the library code it runs (common.smk)
        variants=[(v.model, v.method, v.pattern, v.calib) for v in STUDIED],
    script:
        "../scripts/plot_accuracy_change.py"


rule summary:
    """The run's last word (make run and make study print it): headline numbers from the reports and where they are.
    It waits for every other output of `all`, so it is written last."""
    input:
        category_drop="reports/tables/category_drop.csv",
        perplexity="reports/tables/perplexity.csv" if GRID["perplexity_sources"] else [],
        nsa_csv="reports/tables/nsa.csv" if GRID["nsa_datasets"] else [],
        nsa_json="reports/nsa.json" if GRID["nsa_datasets"] else [],
        everything=lambda wc: STUDY_OUTPUTS,
    output:
        "reports/summary.md",
    log:
        "logs/report/summary.log",
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("summary.py"),  # the library code it runs (common.smk)
        grid=config["grid"],
        variants=[(v.model, v.method, v.pattern, v.calib) for v in STUDIED],
    script:
        "../scripts/summary.py"


rule claims:
    """Every claim of the study tested on the grid's results: the comparison, its effect with a 95% interval, a paired
    test, Holm's correction over the table, a verdict, and for an inconclusive one the data that would resolve it."""
    input:
        results=EVAL_FILES,
        guided=GUIDED_EVAL_FILES,
        perplexity=PERPLEXITY_FILES,
        compare=NSA_COMPARE_FILES,
        causal=NSA_CAUSAL_FILES,
    output:
        csv=report(
            "reports/claims.csv",
            caption="../report/claims.rst",
            category="Claims",
        ),
        markdown="reports/claims.md",
        metrics="reports/claims.json",
    log:
        "logs/report/claims.log",
    benchmark:
        "benchmarks/report/claims.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("claims.py"),  # the library code it runs (common.smk)
        evaluation=config["evaluation"],
        limit=GRID["eval_limit"],
        pruning=config["pruning"],
        perplexity=PERPLEXITY_PARAMS,
        claims=config["claims"],
        sources={name: config["calibration_sources"][name] for name in GRID["calibration"]["sources"]},
        base=SWEEP_BASE,
        grid=config["grid"],
    script:
        "../scripts/claims.py"
