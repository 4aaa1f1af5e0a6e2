# Tables, figures and headline metrics, from every result of the selected grid.

REPORT_OUTPUTS = [
    f"{REPORTS}/tables/accuracy.csv",
    f"{REPORTS}/tables/accuracy.md",
    f"{REPORTS}/tables/accuracy.tex",
    f"{REPORTS}/tables/category_drop.csv",
    f"{REPORTS}/tables/category_drop.md",
    f"{REPORTS}/tables/category_drop.tex",
    f"{REPORTS}/tables/floor.csv",
    f"{REPORTS}/tables/floor.md",
    f"{REPORTS}/figures/accuracy_change.png",
    f"{REPORTS}/figures/accuracy_change.svg",
    f"{REPORTS}/metrics.json",
    f"{REPORTS}/claims.csv",
    f"{REPORTS}/claims.md",
    f"{REPORTS}/claims.json",
    f"{REPORTS}/tables/power.csv",
    f"{REPORTS}/tables/power.md",
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
        records=DATASET_FILES,  # which datasets offer one list of choices (a majority label: reporting.floor)
    output:
        csv=report(
            f"{REPORTS}/tables/accuracy.csv",
            caption="../report/accuracy_table.rst",
            category="Accuracy",
            subcategory="Main grid",
        ),
        markdown=f"{REPORTS}/tables/accuracy.md",
        latex=f"{REPORTS}/tables/accuracy.tex",
        drop_csv=report(
            f"{REPORTS}/tables/category_drop.csv",
            caption="../report/category_drop.rst",
            category="Accuracy",
            subcategory="Main grid",
        ),
        drop_markdown=f"{REPORTS}/tables/category_drop.md",
        drop_latex=f"{REPORTS}/tables/category_drop.tex",
        floor_csv=report(
            f"{REPORTS}/tables/floor.csv",
            caption="../report/floor.rst",
            category="Accuracy",
            subcategory="Main grid",
        ),
        floor_markdown=f"{REPORTS}/tables/floor.md",
        metrics=f"{REPORTS}/metrics.json",
    log:
        "logs/report/aggregate.log",
    benchmark:
        "benchmarks/report/aggregate.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("aggregate.py"),  # the library code it runs (common.smk)
        evaluation=config["evaluation"],
        limit=EVAL_LIMIT,
        pruning=config["pruning"],
        bootstrap_iters=config["evaluation"]["bootstrap_iters"],
        bootstrap_seed=0,
        base=SWEEP_BASE,
        perplexity=PERPLEXITY_PARAMS,
        alpha=config["claims"]["alpha"],
    script:
        "../scripts/aggregate.py"


rule plot_accuracy_change:
    """Accuracy change vs dense with its bootstrap CI, by task category and pruning method and pattern (the main
    grid's variants at the base calibration source and format)."""
    input:
        f"{REPORTS}/tables/category_drop.csv",
    output:
        png=report(
            f"{REPORTS}/figures/accuracy_change.png",
            caption="../report/accuracy_change.rst",
            category="Accuracy",
            subcategory="Main grid",
        ),
        svg=f"{REPORTS}/figures/accuracy_change.svg",
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


rule power:
    """Per dataset: the examples it holds, the examples the claims' design (claims.design) needs, the examples the grid
    evaluates and the power they give: what the grid's eval_limit costs in power."""
    input:
        manifests=expand("data/datasets/{dataset}.json", dataset=GRID["datasets"]),
    output:
        csv=report(
            f"{REPORTS}/tables/power.csv",
            caption="../report/power.rst",
            category="Accuracy",
            subcategory="Main grid",
        ),
        markdown=f"{REPORTS}/tables/power.md",
    log:
        "logs/report/power.log",
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("power.py"),  # the library code it runs (common.smk)
        categories={d: config["datasets"][d]["category"] for d in GRID["datasets"]},
        limit=EVAL_LIMIT,
        claims=config["claims"],
        tests=len(VARIANTS),
    script:
        "../scripts/power.py"


rule summary:
    """The run's last word (make run and make study print it): headline numbers from the reports and where they are.
    It waits for every other output of `all`, so it is written last."""
    input:
        category_drop=f"{REPORTS}/tables/category_drop.csv",
        floor=f"{REPORTS}/tables/floor.csv",
        accuracy=f"{REPORTS}/tables/accuracy.csv",
        perplexity=f"{REPORTS}/tables/perplexity.csv" if GRID["perplexity_sources"] else [],
        nsa_csv=f"{REPORTS}/tables/nsa.csv" if GRID["nsa_datasets"] else [],
        nsa_json=f"{REPORTS}/nsa.json" if GRID["nsa_datasets"] else [],
        everything=lambda wc: STUDY_OUTPUTS,
    output:
        f"{REPORTS}/summary.md",
    log:
        "logs/report/summary.log",
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("summary.py"),  # the library code it runs (common.smk)
        grid=config["grid"],
        variants=[(v.model, v.method, v.pattern, v.calib) for v in STUDIED],
        left_out=grid_left_out(GRID),
    script:
        "../scripts/summary.py"


rule claims:
    """Every claim of the study tested on the grid's results: the comparison, its effect with a 95% interval, a paired
    test, Holm's correction over the table, a verdict, and for an inconclusive one the data that would resolve it."""
    input:
        results=EVAL_FILES,
        records=DATASET_FILES,  # which datasets offer one list of choices (a majority label: reporting.floor)
        guided=GUIDED_EVAL_FILES,
        perplexity=PERPLEXITY_FILES,
        compare=NSA_COMPARE_FILES,
        causal=NSA_CAUSAL_FILES,
    output:
        csv=report(
            f"{REPORTS}/claims.csv",
            caption="../report/claims.rst",
            category="Claims",
        ),
        markdown=f"{REPORTS}/claims.md",
        metrics=f"{REPORTS}/claims.json",
    log:
        "logs/report/claims.log",
    benchmark:
        "benchmarks/report/claims.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("claims.py"),  # the library code it runs (common.smk)
        evaluation=config["evaluation"],
        limit=EVAL_LIMIT,
        pruning=config["pruning"],
        perplexity=PERPLEXITY_PARAMS,
        claims=config["claims"],
        sources={name: config["calibration_sources"][name] for name in GRID["calibration"]["sources"]},
        base=SWEEP_BASE,
        grid=config["grid"],
    script:
        "../scripts/claims.py"
