# Tables, figures and headline metrics, from every result of the selected grid.

REPORT_OUTPUTS = [
    "reports/tables/accuracy.csv",
    "reports/tables/accuracy.md",
    "reports/figures/accuracy_change.png",
    "reports/figures/accuracy_change.svg",
    "reports/metrics.json",
]


rule aggregate:
    """Per-dataset accuracy table, dense baseline beside every pruned result, plus the headline metrics."""
    input:
        EVAL_FILES,
    output:
        csv="reports/tables/accuracy.csv",
        markdown="reports/tables/accuracy.md",
        metrics="reports/metrics.json",
    params:
        evaluation=config["evaluation"],
        limit=GRID["eval_limit"],
    log:
        "logs/report/aggregate.log",
    script:
        "../scripts/aggregate.py"


rule plot_accuracy_change:
    """Accuracy change vs dense, by task category and pruning method."""
    input:
        "reports/tables/accuracy.csv",
    output:
        png=report("reports/figures/accuracy_change.png", caption="../report/accuracy_change.rst", category="Accuracy"),
        svg="reports/figures/accuracy_change.svg",
    log:
        "logs/report/plot_accuracy_change.log",
    script:
        "../scripts/plot_accuracy_change.py"
