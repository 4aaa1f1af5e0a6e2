"""params.yaml: validation (once, before any job) and the naming of every grid point.

The keys built here are the path components of every output, so a result's path says which model,
method, pattern, calibration sample and dataset made it. One module, just over 400 lines: the checks and the grid's
expansion read the same key grammar (pattern and calibration keys, variant exclusions).
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from prunescope.data.records import template_fields

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "params.schema.yaml"
NO_CALIBRATION = "none"  # the calibration key of methods that use no data (magnitude)
CALIBRATED = {"wanda", "sparsegpt", "ria"}
TEXT_SOURCES = {"gensim", "hub"}  # documents, sampled as raw windows
QA_FORMATS = ("zero", "single", "icl", "cot")  # question-answer sources (hub_qa, task), packed to seqlen

_CALIB_KEY = re.compile(r"^(?P<source>[A-Za-z0-9][A-Za-z0-9_.]*)-(?P<format>[a-z]+)-n(?P<nsamples>\d+)"
                        r"-l(?P<seqlen>\d+)-s(?P<seed>\d+)$")
CALIBRATION_KEY_PARTS = ("source", "format", "nsamples", "seqlen", "seed")  # what a calibration key names
_PATTERN_KEY = re.compile(r"^(?P<structure>unstructured|owl|\d+of\d+)-(?P<sparsity>[0-9.]+)$")
OWL = "owl"  # the pattern of unstructured pruning whose block sparsities OWL sets (mean s); it needs calibration


class ParamsError(ValueError):
    """A params.yaml value that is not allowed; the message is one line naming key, value and what is allowed."""


def validate_params(params: dict) -> None:
    """Check params against the schema, then the cross-references a schema cannot express."""
    _check_schema(params)
    _check_references(params)


# YAML's 4.0 or 1e30 is a float: JSON Schema would take either as an "integer", but a count, index or seed must be
# written as one (and 1e30 would pass every minimum).
_STRICT_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_STRICT_TYPES)


@functools.cache
def _schema_validator() -> jsonschema.protocols.Validator:
    """The schema is read once per process (parsing it took two thirds of each validation)."""
    return _Validator(yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8")))


def _check_schema(params: dict) -> None:
    error = jsonschema.exceptions.best_match(_schema_validator().iter_errors(params))
    if error is None:
        return
    # For "one of several shapes": a shape that fails only by unknown keys is the one meant, with a typo; else
    # if a shape got further into the value, its deepest error names the offending key best; if none did, the
    # value has none of the shapes, which the parent's description says.
    while error.context:
        shapes: dict = {}
        for sub in error.context:
            shapes.setdefault(sub.relative_schema_path[0], []).append(sub)
        typos = [errors[0] for errors in shapes.values() if all(e.validator == "additionalProperties" for e in errors)]
        depth = max(len(e.absolute_path) for e in error.context)
        if typos:
            error = typos[0]
            break
        if depth <= len(error.absolute_path):
            break
        error = jsonschema.exceptions.best_match([e for e in error.context if len(e.absolute_path) == depth])
    key = _dotted(error.absolute_path)
    allowed = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = "one of " + ", ".join(sorted(error.schema.get("properties", {}))) if error.schema.get(
            "properties") else "no further keys"
        raise ParamsError(f"params.yaml: unknown key {_join(key, unknown[0]) if unknown else key}: allowed: {allowed}")
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        raise ParamsError(f"params.yaml: missing key {_join(key, missing)}: every key must be written out")
    shown = _short(error.instance)
    raise ParamsError(f"params.yaml: {key or '(top level)'} = {shown} is not allowed: "
                      f"{allowed or error.message}")


def _check_references(params: dict) -> None:
    if params["grid"] not in params["grids"]:
        raise ParamsError(f"params.yaml: grid = {params['grid']!r} is not allowed: "
                          f"one of {', '.join(params['grids'])}")
    design = params["claims"]["design"]
    if design["effect"] > design["discordance"]:
        raise ParamsError(f"params.yaml: claims.design.effect = {design['effect']} is not allowed: an accuracy change "
                          f"needs at least that share of changed answers (discordance = {design['discordance']})")
    folders: dict[str, str] = {}
    for grid_name, grid in params["grids"].items():
        prefix = f"grids.{grid_name}"
        if grid["reports"] in folders:
            raise ParamsError(f"params.yaml: {prefix}.reports = {grid['reports']!r} is not allowed: grid "
                              f"{folders[grid['reports']]!r} writes its reports there; give each grid its own folder")
        folders[grid["reports"]] = grid_name
        _check_names(f"{prefix}.models", grid["models"], params["models"])
        _check_names(f"{prefix}.datasets", grid["datasets"], params["datasets"])
        _check_names(f"{prefix}.nsa_datasets", grid["nsa_datasets"], dict.fromkeys(grid["datasets"]))
        _check_names(f"{prefix}.nsa_models", grid["nsa_models"] or [], dict.fromkeys(grid["models"]))
        for i, rule in enumerate(grid["exclude"]):
            for key, registry in (("model", grid["models"]), ("method", grid["methods"]),
                                  ("source", grid["calibration"]["sources"])):
                if key in rule:
                    _check_names(f"{prefix}.exclude[{i}].{key}", [rule[key]], dict.fromkeys(registry))
        _check_names(f"{prefix}.calibration.sources", grid["calibration"]["sources"], params["calibration_sources"])
        calibration_pairs(grid["calibration"], params["calibration_sources"], prefix=f"{prefix}.calibration")
        for i, pattern in enumerate(grid["patterns"]):
            if pattern["structure"] != "unstructured":
                n, m = (int(x) for x in pattern["structure"].split(":"))
                if abs(pattern["sparsity"] - n / m) > 1e-9:  # float round-off of n/m only: the label must be true
                    raise ParamsError(
                        f"params.yaml: {prefix}.patterns[{i}].sparsity = {pattern['sparsity']} is not allowed: "
                        f"structure {pattern['structure']} prunes exactly {n}/{m} = {n / m}")
                if (grid_name == params["grid"] and "wanda" in grid["methods"]
                        and params["pruning"]["wanda"]["per_row_alpha"]):
                    raise ParamsError(
                        "params.yaml: pruning.wanda.per_row_alpha = True is not allowed: the per-row variant is "
                        f"unstructured only, and {prefix} prunes wanda with {pattern['structure']}")
        _check_guided(prefix, grid, params, selected=grid_name == params["grid"])
        _check_names(f"{prefix}.perplexity_sources", grid["perplexity_sources"], params["perplexity"]["sources"])
    for name, model in params["models"].items():
        if model["source"] == "bundled":
            _check_names(f"models.{name}.archive", [model["archive"]], params["archives"])
    for name, dataset in params["datasets"].items():
        if "archive" in dataset["source"]:
            _check_names(f"datasets.{name}.source.archive", [dataset["source"]["archive"]], params["archives"])
        _check_train(name, dataset)
        _check_labels(name, dataset)
        _check_template(f"datasets.{name}.template", dataset["template"])
    for name, source in params["calibration_sources"].items():
        if source["kind"] == "hub_qa":
            _check_template(f"calibration_sources.{name}.template", source["template"], ("input",))
        if source["kind"] == "task":
            _check_names(f"calibration_sources.{name}.dataset", [source["dataset"]], params["datasets"])
            if params["datasets"][source["dataset"]]["train"] is None:
                raise ParamsError(f"params.yaml: calibration_sources.{name}.dataset = {source['dataset']!r} is not "
                                  f"allowed: datasets.{source['dataset']}.train is null, so it has no calibration pool")


def _check_guided(prefix: str, grid: dict, params: dict, selected: bool) -> None:
    """NSA-guided pruning protects a category's matched neurons: it needs that category's NSA and an
    unstructured variant of each method to compare with."""
    guided = grid["nsa_guided"]
    _check_names(f"{prefix}.nsa_guided.methods", guided["methods"], dict.fromkeys(grid["methods"]))
    nsa_categories = {params["datasets"][name]["category"] for name in grid["nsa_datasets"]}
    for category in guided["categories"]:
        if category not in nsa_categories:
            raise ParamsError(f"params.yaml: {prefix}.nsa_guided.categories lists {category!r}, but no dataset of "
                              f"{prefix}.nsa_datasets is in that category: add one or remove the category")
    if guided["categories"] and not any(p["structure"] == "unstructured" for p in grid["patterns"]):
        raise ParamsError(f"params.yaml: {prefix}.nsa_guided needs an unstructured pattern in {prefix}.patterns "
                          "(protected neurons cannot keep an N:M pattern)")
    if (selected and "wanda" in guided["methods"] and guided["categories"]
            and params["pruning"]["wanda"]["per_row_alpha"]):
        raise ParamsError("params.yaml: pruning.wanda.per_row_alpha = True is not allowed with "
                          f"{prefix}.nsa_guided.methods listing wanda: set it false or drop wanda there")


def _check_template(key: str, template: str, *allowed: tuple[str, ...]) -> None:
    try:
        template_fields(key, template, *allowed)
    except ValueError as err:
        raise ParamsError(f"params.yaml: {err}") from err


def _check_train(name: str, dataset: dict) -> None:
    """A hub dataset's pool is another split; an archive stand-in's is a holdout; a local file has none."""
    train, kind = dataset["train"], dataset["source"]["kind"]
    expected = {"hub": "split", "vader": "holdout", "bigbench": "holdout"}.get(kind)
    if train is not None and expected not in train:
        allowed = f"null or {{{expected}: ...}}" if expected else "null (a local file has no second split)"
        raise ParamsError(f"params.yaml: datasets.{name}.train = {_short(train)} is not allowed for a {kind} "
                          f"source: {allowed}")


def _check_labels(name: str, dataset: dict) -> None:
    """Every label index the registry writes (label_map values, a constant label) names one of the choices, where
    their number is fixed by the registry (a choices column is checked per record when the dataset is prepared)."""
    source = dataset["source"]
    fields = source.get("fields") or {}
    fixed = dataset["choices"] if isinstance(dataset["choices"], list) else fields.get("choices")
    if not isinstance(fixed, list):
        return
    indices = {f"label_map.{raw}": index for raw, index in (source.get("label_map") or {}).items()}
    if isinstance(fields.get("label"), int):
        indices["fields.label"] = fields["label"]
    for key, index in indices.items():
        if index >= len(fixed):
            raise ParamsError(f"params.yaml: datasets.{name}.source.{key} = {index} is not allowed: it must index one "
                              f"of the dataset's {len(fixed)} choices (0 to {len(fixed) - 1})")


def _check_names(key: str, names: list[str], registry: dict) -> None:
    for i, name in enumerate(names):
        if name not in registry:
            where = f"{key}[{i}]" if len(names) > 1 else key
            raise ParamsError(f"params.yaml: {where} = {name!r} is not allowed: one of {', '.join(registry)}")


def _dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- keys: the path components of outputs -------------------------------------------------------------


def pattern_key(structure: str, sparsity: float) -> str:
    """'unstructured-0.5', 'owl-0.7' (unstructured, OWL's block sparsities) or '2of4-0.5' (':' kept out of paths).

    The sparsity is written in full, without exponent (1e-05 as 0.00001, 0.123456789 as is): the shortest digits
    that read back as the same float, so parse_pattern_key returns exactly the configured value and two sparsities
    never share a path."""
    return f"{structure.replace(':', 'of')}-{format(Decimal(repr(float(sparsity))), 'f')}"


def parse_pattern_key(key: str) -> tuple[str, float]:
    match = _PATTERN_KEY.match(key)
    if not match:
        raise ValueError(f"not a pattern key: {key!r} (expected e.g. unstructured-0.5 or 2of4-0.5)")
    return match["structure"].replace("of", ":"), float(match["sparsity"])


def evaluation_params(evaluation: dict, limit: int | None) -> dict:
    """The params an evaluation result embeds and aggregation expects of it: one definition for writer and readers."""
    return {"evaluation": dict(evaluation), "limit": limit}


def perplexity_params(perplexity: dict) -> dict:
    """The params a perplexity result embeds and its readers expect."""
    return {"perplexity": dict(perplexity)}


def variant_options(method: str, pattern: str, pruning: dict) -> dict | None:
    """The options a variant must have been pruned with under params.yaml's `pruning` section now, in the form its
    evaluation results embed (pruning.artifact.pruning_record); None for the dense model."""
    if method == "dense":
        return None
    structure, _ = parse_pattern_key(pattern)
    layer_sparsity = ({"kind": OWL, "m": pruning[OWL]["m"], "lambda": pruning[OWL]["lambda"]} if structure == OWL
                      else {"kind": "uniform"})
    return {"method_options": dict(pruning[method]), "layer_sparsity": layer_sparsity}


def calibration_key(source: str, fmt: str, nsamples: int, seqlen: int, seed: int) -> str:
    return f"{source}-{fmt}-n{nsamples}-l{seqlen}-s{seed}"


def parse_calibration_key(key: str) -> dict:
    match = _CALIB_KEY.match(key)
    if not match:
        raise ValueError(f"not a calibration key: {key!r} (expected e.g. gensim_wiki-raw-n32-l256-s0)")
    parts = match.groupdict()
    return {k: (v if k in ("source", "format") else int(v)) for k, v in parts.items()}


@dataclass(frozen=True)
class Variant:
    """One pruned model of the grid: the path components results/pruned/{model}/{method}/{pattern}/{calib}."""

    model: str
    method: str
    pattern: str
    calib: str

    @property
    def path(self) -> str:
        return f"{self.model}/{self.method}/{self.pattern}/{self.calib}"


def source_formats(source: dict) -> tuple[str, ...]:
    """The calibration formats a source supports: raw windows of text, or the question-answer formats."""
    if source["kind"] in TEXT_SOURCES:
        return ("raw",)
    has_rationale = source["rationale"] if source["kind"] == "task" else source["rationale_separator"] is not None
    return QA_FORMATS if has_rationale else QA_FORMATS[:-1]


def calibration_pairs(calibration: dict, sources: dict, prefix: str = "calibration") -> list[tuple[str, str]]:
    """(source, format) for every listed format that applies to a listed source ("cot where it applies").

    A source that none of the formats applies to, or a format no source supports, is a config error rather
    than a silently empty part of the grid.
    """
    pairs = [(src, fmt) for src in calibration["sources"] for fmt in calibration["formats"]
             if fmt in source_formats(sources[src])]
    for src in calibration["sources"]:
        if not any(s == src for s, _ in pairs):
            raise ParamsError(f"params.yaml: {prefix}.formats = {calibration['formats']} is not allowed for source "
                              f"{src!r}: it supports {', '.join(source_formats(sources[src]))}")
    for fmt in calibration["formats"]:
        if not any(f == fmt for _, f in pairs):
            raise ParamsError(f"params.yaml: {prefix}.formats lists {fmt!r}, which none of the sources "
                              f"{calibration['sources']} supports (raw: text sources; zero, single, icl: "
                              "question-answer sources; cot: those with rationales)")
    return pairs


def grid_variants(grid: dict, sources: dict) -> list[Variant]:
    """Every pruned variant of a grid in a stable order: the main product, then the sweeps' and OWL's extras."""
    return list(dict.fromkeys(main_variants(grid, sources) + sweep_variants(grid, sources)
                              + owl_variants(grid, sources)))


def main_variants(grid: dict, sources: dict) -> list[Variant]:
    """models x methods x patterns x calibration samples; methods without calibration get one key, 'none'."""
    cal = grid["calibration"]
    calib_keys = [calibration_key(src, fmt, cal["nsamples"], cal["seqlen"], seed)
                  for (src, fmt), seed in itertools.product(calibration_pairs(cal, sources), cal["seeds"])]
    variants = []
    for model, method, pattern in itertools.product(grid["models"], grid["methods"], grid["patterns"]):
        keys = calib_keys if method in CALIBRATED else [NO_CALIBRATION]
        variants += [Variant(model, method, pattern_key(pattern["structure"], pattern["sparsity"]), k) for k in keys]
    return [v for v in variants if not any(excludes(rule, v) for rule in grid["exclude"])]


def excludes(rule: dict, variant: Variant) -> bool:
    """Whether an `exclude` entry of a grid matches the variant (every key it names; `source` never matches a
    variant without calibration)."""
    structure, sparsity = parse_pattern_key(variant.pattern)
    source = None if variant.calib == NO_CALIBRATION else parse_calibration_key(variant.calib)["source"]
    facts = {"model": variant.model, "method": variant.method, "structure": structure, "sparsity": sparsity,
             "source": source}
    return all(facts[key] == value for key, value in rule.items())


def nsa_models(grid: dict) -> list[str]:
    """The grid's models NSA runs on (`nsa_models`, null: all of them)."""
    return grid["models"] if grid["nsa_models"] is None else grid["nsa_models"]


def studied_variants(grid: dict, sources: dict) -> list[Variant]:
    """The main variants pruned with the base calibration source and format (every seed) or with none: what
    NSA compares and NSA-guided pruning mirrors (the other sources are the calibration experiment's)."""
    base = sweep_base(grid, sources)
    return [v for v in main_variants(grid, sources) if v.calib == NO_CALIBRATION
            or parse_calibration_key(v.calib) | {"seed": base["seed"]} == {k: base[k] for k in CALIBRATION_KEY_PARTS}]


def sweep_base(grid: dict, sources: dict) -> dict:
    """What every sweep holds fixed: the grid's first model, first unstructured pattern (else its first pattern)
    and first calibration source, format and seed, at the grid's nsamples and seqlen."""
    cal = grid["calibration"]
    source, fmt = calibration_pairs(cal, sources)[0]
    pattern = next((p for p in grid["patterns"] if p["structure"] == "unstructured"), grid["patterns"][0])
    return {"model": grid["models"][0], "pattern": pattern_key(pattern["structure"], pattern["sparsity"]),
            "source": source, "format": fmt, "nsamples": cal["nsamples"], "seqlen": cal["seqlen"],
            "seed": cal["seeds"][0]}


def sweep_variants(grid: dict, sources: dict) -> list[Variant]:
    """The sparsity sweep (unstructured, each sweep method) and the calibration-size sweeps (nsamples at the base
    seqlen, seqlen at the base nsamples; calibrated methods), each varying one thing from sweep_base."""
    sweeps, base = grid["sweeps"], sweep_base(grid, sources)

    def key(nsamples: int, seqlen: int) -> str:
        return calibration_key(base["source"], base["format"], nsamples, seqlen, base["seed"])

    variants = []
    for method in sweeps["methods"]:
        calib = key(base["nsamples"], base["seqlen"]) if method in CALIBRATED else NO_CALIBRATION
        variants += [Variant(base["model"], method, pattern_key("unstructured", s), calib)
                     for s in sweeps["sparsities"]]
        if method in CALIBRATED:
            variants += [Variant(base["model"], method, base["pattern"], key(n, base["seqlen"]))
                         for n in sweeps["nsamples"]]
            variants += [Variant(base["model"], method, base["pattern"], key(base["nsamples"], length))
                         for length in sweeps["seqlens"]]
    return variants


def owl_variants(grid: dict, sources: dict) -> list[Variant]:
    """OWL beside uniform layer sparsity: per OWL method and sparsity, the uniform variant and the OWL one at the
    sweeps' base model and calibration sample (OWL's outlier ratios need calibration, magnitude's too)."""
    base = sweep_base(grid, sources)
    calib = calibration_key(base["source"], base["format"], base["nsamples"], base["seqlen"], base["seed"])
    return [Variant(base["model"], method, pattern_key(layout, sparsity),
                    calib if layout == OWL or method in CALIBRATED else NO_CALIBRATION)
            for method in grid["owl"]["methods"] for sparsity in grid["owl"]["sparsities"]
            for layout in ("unstructured", OWL)]


def guided_variants(grid: dict, sources: dict) -> list[tuple[str, Variant]]:
    """(protected category, variant) for NSA-guided pruning: the grid's unstructured variants of the guided
    methods, once per protected category."""
    guided = grid["nsa_guided"]
    return [(category, v) for category in guided["categories"] for v in studied_variants(grid, sources)
            if v.method in guided["methods"] and v.pattern.startswith("unstructured") and v.model in nsa_models(grid)]

