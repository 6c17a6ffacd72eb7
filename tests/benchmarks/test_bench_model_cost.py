"""benchmarks/bench_model_cost.py: the cases its lever flags build (the timing itself is the benchmark's)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench(request):
    sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its siblings (_harness, bench_compile)
    request.addfinalizer(lambda: sys.path.remove(str(REPO / "benchmarks")))
    import bench_model_cost

    return bench_model_cost


def test_light_levers_extend_the_light_variant_and_recipe_levers_the_recipe(bench):
    from cvkit.cli.demo import LIGHT_OVERRIDES

    light = bench.light_levers(["model.neck_channels=24; model.head_convs=3"])
    assert light == {"light + neck_channels=24;head_convs=3":
                     [*LIGHT_OVERRIDES, "model.neck_channels=24", "model.head_convs=3"]}
    recipe = bench.light_levers(["model.neck_channels=48"], "recipe")
    assert recipe == {"recipe + neck_channels=48": ["model.neck_channels=48"]}
    with pytest.raises(SystemExit, match="--recipe-lever 'neck'"):
        bench.light_levers(["neck"], "recipe")


def test_split_argv_separates_both_lever_flags(bench):
    light, recipe, rest = bench._split_argv(["--light-lever", "a=1", "--recipe-lever", "b=2", "--threads", "1"])
    assert (light, recipe, rest) == (["a=1"], ["b=2"], ["--threads", "1"])
