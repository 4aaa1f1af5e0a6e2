"""Fuzzed params: hypothesis breaks the shipped params.yaml in ways that are malformed whatever the key (an unknown
key, a value of a shape no key accepts, a float where an integer must be, a huge integer, an empty list where
one entry at least is needed, a duplicate grid entry, an N:M pattern at another sparsity) anywhere in the file,
and validation must reject each with one line naming the broken key.
That the workflow then stops before any job and writes nothing is checked through Snakemake in test_workflow."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunescope.config import ParamsError, validate_params

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
UNKNOWN = "zz_not_a_key"
TRIED: Counter = Counter()  # mutation kind -> cases; the note reports the totals


def nodes(value, path=()):
    """Every (path, value) in the params tree, containers and leaves."""
    yield path, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from nodes(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from nodes(child, (*path, index))


NODES = list(nodes(PARAMS))
MAPPINGS = [path for path, value in NODES if isinstance(value, dict)]
CLOSED_MAPPINGS = [path for path in MAPPINGS if path[-1:] != ("label_map",)]  # a label_map maps raw labels: any key
NON_MAPPINGS = [path for path, value in NODES if path and not isinstance(value, dict)]
LISTS = [path for path, value in NODES if isinstance(value, list)]
INTEGERS = [path for path, value in NODES if isinstance(value, int) and not isinstance(value, bool)]
# an empty sweep or owl list means "no sweep" or "no OWL", an empty nsa_guided list "no guided pruning", an empty
# nsa_datasets "no NSA" (refused only beside guided pruning, tests/test_config.py), an empty perplexity_sources "no
# perplexity": every other list needs entries
REQUIRED_LISTS = [path for path in LISTS  # lists that may be empty: nothing swept, excluded, ... there
                  if not {"sweeps", "nsa_guided", "owl", "perplexity_sources", "nsa_datasets", "exclude"} & set(path)]
GRID_NAME_LISTS = [(grid, key) for grid in PARAMS["grids"] for key in ("models", "methods", "datasets")]


def dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def replaced(path, value) -> dict:
    params = copy.deepcopy(PARAMS)
    node = params
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return params


@st.composite
def malformed(draw) -> tuple[str, dict, str]:
    """(kind, params, the dotted key the error must name)."""
    kind = draw(st.sampled_from(["unknown key", "mapping for a non-mapping", "list for a mapping",
                                 "mapping for a list", "float for an integer", "huge float for an integer",
                                 "huge integer", "empty list", "duplicate grid entry", "N:M at another sparsity"]))
    if kind == "unknown key":
        path = draw(st.sampled_from(CLOSED_MAPPINGS))
        params = copy.deepcopy(PARAMS)
        node = params
        for part in path:
            node = node[part]
        node[UNKNOWN] = draw(st.one_of(st.integers(), st.text(max_size=5), st.none()))
        return kind, params, dotted((*path, UNKNOWN))
    if kind == "mapping for a non-mapping":
        path = draw(st.sampled_from(NON_MAPPINGS))
        return kind, replaced(path, {UNKNOWN: draw(st.integers())}), dotted(path)
    if kind == "list for a mapping":
        path = draw(st.sampled_from([p for p in MAPPINGS if p]))
        return kind, replaced(path, draw(st.lists(st.integers(), max_size=3))), dotted(path)
    if kind == "mapping for a list":
        path = draw(st.sampled_from(LISTS))
        return kind, replaced(path, {UNKNOWN: draw(st.text(max_size=5))}), dotted(path)
    if kind in ("float for an integer", "huge float for an integer"):
        path = draw(st.sampled_from(INTEGERS))
        value = draw(st.floats(min_value=1e30, max_value=1e300) if kind.startswith("huge")
                     else st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v != int(v)))
        return kind, replaced(path, value), dotted(path)
    if kind == "huge integer":
        path = draw(st.sampled_from(INTEGERS))
        return kind, replaced(path, 10 ** draw(st.integers(min_value=12, max_value=400))), dotted(path)
    if kind == "empty list":
        path = draw(st.sampled_from(REQUIRED_LISTS))
        return kind, replaced(path, []), dotted(path)
    if kind == "duplicate grid entry":
        grid, key = draw(st.sampled_from(GRID_NAME_LISTS))
        names = PARAMS["grids"][grid][key]
        return kind, replaced(("grids", grid, key), [*names, draw(st.sampled_from(names))]), f"grids.{grid}.{key}"
    grid = draw(st.sampled_from(sorted(PARAMS["grids"])))
    structure = draw(st.sampled_from(["2:4", "4:8"]))
    sparsity = draw(st.floats(min_value=0.01, max_value=0.99).filter(lambda s: abs(s - 0.5) > 1e-9))
    patterns = [*PARAMS["grids"][grid]["patterns"], {"structure": structure, "sparsity": sparsity}]
    index = len(patterns) - 1
    return kind, replaced(("grids", grid, "patterns"), patterns), f"grids.{grid}.patterns[{index}].sparsity"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed())
def test_malformed_params_are_rejected_with_one_line_naming_the_key(case):
    kind, params, key = case
    TRIED[kind] += 1
    with pytest.raises(ParamsError) as caught:
        validate_params(params)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("params.yaml: "), message
    assert key in message, (kind, key, message)


def test_every_integer_made_huge_and_every_required_list_emptied_is_rejected():
    """The exhaustive companion of the sampled test: each integer in params.yaml set to 10**30 and each required
    list emptied, one at a time."""
    cases = [(dotted(path), replaced(path, 10**30)) for path in INTEGERS]
    cases += [(dotted(path), replaced(path, [])) for path in REQUIRED_LISTS]
    accepted = []
    for key, params in cases:
        try:
            validate_params(params)
        except ParamsError as error:
            assert key in str(error) and "\n" not in str(error), (key, str(error))
        else:
            accepted.append(key)
    assert len(cases) > 100 and accepted == []
