# prunescope: the one DAG. Rules live in workflow/rules/ by topic; code lives in src/prunescope/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"  # the report's front page; captions in workflow/report/


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/calibration.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/perplexity.smk"
include: "workflow/rules/nsa.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/experiments.smk"
include: "workflow/rules/export.smk"


# Every table, figure and metric of the selected grid; the run's summary is written after them.
STUDY_OUTPUTS = REPORT_OUTPUTS + SIMILARITY_FILES + NSA_REPORT_OUTPUTS + EXPERIMENT_OUTPUTS + PERPLEXITY_REPORT_OUTPUTS


# The whole study for the selected grid, ending with its summary. (A comment, not a docstring: snakefmt moves
# default_target above a docstring, which Snakemake then cannot parse.)
rule all:
    default_target: True
    input:
        STUDY_OUTPUTS,
        f"{REPORTS}/summary.md",


rule prepare_all:
    """Models, datasets, calibration samples and perplexity windows of the selected grid (DVC stage `prepare`)."""
    input:
        MODEL_DIRS,
        DATASET_FILES,
        CALIBRATION_FILES,
        PERPLEXITY_WINDOW_FILES,


rule prune_all:
    """Every pruned variant of the selected grid (DVC stage `prune`)."""
    input:
        PRUNED_DIRS,
        PRUNE_RUN_FILES,


rule evaluate_all:
    """Every dense and pruned result of the selected grid, and each calibration sample's similarity to the
    evaluated datasets (DVC stage `evaluate`)."""
    input:
        EVAL_FILES,
        SIMILARITY_FILES,


rule perplexity_all:
    """Perplexity of the dense model and every pruned variant (NSA-guided ones too) on the grid's perplexity sources,
    its tables and the perplexity-vs-accuracy figure (DVC stage `perplexity`)."""
    input:
        PERPLEXITY_FILES,
        PERPLEXITY_REPORT_OUTPUTS,


rule nsa_all:
    """Neuron Semantic Attribution on the grid's NSA datasets, dense and every pruned variant, NSA-guided pruning,
    and their tables and figures (DVC stage `nsa`)."""
    input:
        NSA_FILES,
        NSA_REPORT_OUTPUTS,
