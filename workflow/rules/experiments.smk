# The experiments beside the main grid: the calibration analysis, the sparsity and calibration-size sweeps,
# OWL vs uniform layer sparsity, and what each pruning run cost. Their variants are part of VARIANTS
# (config.sweep_variants, config.owl_variants).

EXPERIMENT_TABLES = ["calibration", "sparsity", "calib_size", "owl", "prune_cost"]
EXPERIMENT_FIGURES = ["calibration_heatmap", "sparsity", "calib_nsamples", "calib_seqlen"]
EXPERIMENT_OUTPUTS = [f"{REPORTS}/tables/{name}.{ext}" for name in EXPERIMENT_TABLES for ext in ("csv", "md")] + [
    f"{REPORTS}/figures/{name}.{ext}" for name in EXPERIMENT_FIGURES for ext in ("png", "svg")
]


rule experiment_report:
    """Calibration source/format x category (with the calibration-to-task similarity), the sparsity and
    calibration-size sweep tables and curves, OWL vs uniform layer sparsity (accuracy and perplexity), the
    calibration x dataset heatmap."""
    input:
        results=EVAL_FILES,
        similarity=SIMILARITY_FILES,
        perplexity=VARIANT_PERPLEXITY_FILES,
    output:
        calibration=report(
            f"{REPORTS}/tables/calibration.csv",
            caption="../report/calibration_table.rst",
            category="Calibration",
            subcategory="Source and format",
        ),
        calibration_md=f"{REPORTS}/tables/calibration.md",
        sparsity=report(
            f"{REPORTS}/tables/sparsity.csv",
            caption="../report/sparsity_table.rst",
            category="Accuracy",
            subcategory="Sparsity sweep",
        ),
        sparsity_md=f"{REPORTS}/tables/sparsity.md",
        calib_size=report(
            f"{REPORTS}/tables/calib_size.csv",
            caption="../report/calib_size_table.rst",
            category="Calibration",
            subcategory="Calibration size",
        ),
        calib_size_md=f"{REPORTS}/tables/calib_size.md",
        owl=report(
            f"{REPORTS}/tables/owl.csv",
            caption="../report/owl_table.rst",
            category="Accuracy",
            subcategory="OWL layer sparsity",
        ),
        owl_md=f"{REPORTS}/tables/owl.md",
        heatmap_png=report(
            f"{REPORTS}/figures/calibration_heatmap.png",
            caption="../report/calibration_heatmap.rst",
            category="Calibration",
            subcategory="Source and format",
        ),
        heatmap_svg=f"{REPORTS}/figures/calibration_heatmap.svg",
        sparsity_png=report(
            f"{REPORTS}/figures/sparsity.png",
            caption="../report/sparsity.rst",
            category="Accuracy",
            subcategory="Sparsity sweep",
        ),
        sparsity_svg=f"{REPORTS}/figures/sparsity.svg",
        nsamples_png=report(
            f"{REPORTS}/figures/calib_nsamples.png",
            caption="../report/calib_nsamples.rst",
            category="Calibration",
            subcategory="Calibration size",
        ),
        nsamples_svg=f"{REPORTS}/figures/calib_nsamples.svg",
        seqlen_png=report(
            f"{REPORTS}/figures/calib_seqlen.png",
            caption="../report/calib_seqlen.rst",
            category="Calibration",
            subcategory="Calibration size",
        ),
        seqlen_svg=f"{REPORTS}/figures/calib_seqlen.svg",
    log:
        "logs/report/experiment_report.log",
    benchmark:
        "benchmarks/report/experiment_report.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("experiment_report.py"),  # the library code it runs (common.smk)
        evaluation=config["evaluation"],
        limit=EVAL_LIMIT,
        pruning=config["pruning"],
        base=SWEEP_BASE,
        sweep_methods=GRID["sweeps"]["methods"],
        owl=GRID["owl"],
        perplexity=PERPLEXITY_PARAMS,
    script:
        "../scripts/experiment_report.py"


rule prune_cost:
    """Per pruning run: wall time, peak memory, achieved sparsity, reconstruction error per layer type."""
    input:
        artifacts=PRUNED_DIRS,
        measurements=PRUNE_RUN_FILES,
    output:
        csv=report(
            f"{REPORTS}/tables/prune_cost.csv",
            caption="../report/prune_cost.rst",
            category="Pruning cost",
            subcategory="Per pruning run",
        ),
        markdown=f"{REPORTS}/tables/prune_cost.md",
    log:
        "logs/report/prune_cost.log",
    benchmark:
        "benchmarks/report/prune_cost.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("prune_cost.py"),  # the library code it runs (common.smk)
    script:
        "../scripts/prune_cost.py"
