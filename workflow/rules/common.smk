# Validation (once, before any job) and the grid's target paths. Every output path carries its grid point.
import sys

from prunescope.config import (
    NO_CALIBRATION,
    ParamsError,
    grid_variants,
    parse_calibration_key,
    validate_params,
)

try:
    validate_params(config)
except ParamsError as err:
    sys.exit(str(err))

GRID = config["grids"][config["grid"]]
VARIANTS = grid_variants(GRID, config["calibration_sources"])


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    source=r"[A-Za-z0-9][A-Za-z0-9_.]*",
    method=r"magnitude|wanda|sparsegpt|ria",
    pattern=r"(unstructured|\d+of\d+)-[0-9.]+",
    calib=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    file=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def archive_file(name):
    return f"data/raw/{config['archives'][name]['file']}"


def calibration_path(model, calib):
    return f"data/calibration/{model}/{calib}.safetensors"


MODEL_DIRS = expand("data/models/{model}", model=GRID["models"])
DATASET_FILES = expand("data/datasets/{dataset}.jsonl", dataset=GRID["datasets"])
CALIBRATION_FILES = sorted({calibration_path(v.model, v.calib) for v in VARIANTS if v.calib != NO_CALIBRATION})
PRUNED_DIRS = [f"results/pruned/{v.path}" for v in VARIANTS]
DENSE_EVAL_FILES = expand("results/eval/{model}/dense/{dataset}.json", model=GRID["models"], dataset=GRID["datasets"])
PRUNED_EVAL_FILES = [f"results/eval/{v.path}/{dataset}.json" for v in VARIANTS for dataset in GRID["datasets"]]
EVAL_FILES = DENSE_EVAL_FILES + PRUNED_EVAL_FILES
TASK_DIRS = expand("results/tasks/{dataset}", dataset=GRID["datasets"])
SIMILARITY_FILES = [path.replace("data/calibration/", "results/similarity/").replace(".safetensors", ".json")
                    for path in CALIBRATION_FILES]
