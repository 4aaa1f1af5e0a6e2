# Exports of pruned variants as checkpoints other tools load (prunescope.pruning.export), made on demand:
# `make export VARIANT={model}/{method}/{pattern}/{calib}` or snakemake results/exports/<variant>/<format>.
# Not in `all` and not a DVC stage: nothing downstream reads them, and a full model per variant is disk, not study.
from pathlib import Path

from prunescope.config import Variant
from prunescope.pruning.export import check_export_format


def export_artifact(wc):
    """The variant's artifact. An unknown format, or a variant neither in the selected grid nor already pruned on
    disk, stops the plan with one error (Snakemake would otherwise prune whatever the path names)."""
    check_export_format(wc.format)
    variant = Variant(wc.model, wc.method, wc.pattern, wc.calib)
    artifact = f"results/pruned/{variant.path}"
    if variant not in VARIANTS and not Path(artifact).is_dir():
        raise ValueError(f"no pruned variant {variant.path}: it is not in grid {config['grid']!r} and "
                         f"{artifact} does not exist; the grid's variants are e.g. {VARIANTS[0].path}")
    return artifact


rule export:
    """One pruned variant written as a standalone checkpoint in one format, with export.json naming its source."""
    input:
        model="data/models/{model}",
        artifact=export_artifact,
    output:
        directory("results/exports/{model}/{method}/{pattern}/{calib}/{format}"),
    wildcard_constraints:
        format=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    params:
        dtype=lambda wc: config["models"][wc.model]["dtype"],
    log:
        "logs/export/{model}/{method}/{pattern}/{calib}/{format}.log",
    benchmark:
        "benchmarks/export/{model}/{method}/{pattern}/{calib}/{format}.tsv"
    script:
        "../scripts/export.py"
