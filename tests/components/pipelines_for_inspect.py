"""Real KFP pipelines that tests/components/test_inspect.py compiles and inspects.

Lightweight components must live in a real .py file (KFP serialises their source), so they are
here rather than inside the tests. Nothing here runs: the pipelines are only compiled.
"""

from kfp import dsl
from mlcost.components import metered_component

_IMAGE = "python:3.11"  # explicit, so kfp does not warn about its future default image


@dsl.component(base_image=_IMAGE)
def train(x: int) -> int:
    return x


@dsl.component(base_image=_IMAGE)
def prepare() -> int:
    return 1


@dsl.pipeline(name="type-only")
def type_only() -> None:
    """Only `set_accelerator_type`: KFP compiles a count of 1."""
    train(x=1).set_accelerator_type("NVIDIA_TESLA_T4")


@dsl.pipeline(name="limit-only")
def limit_only() -> None:
    """Only `set_accelerator_limit`: no type, so the caller's default type applies."""
    train(x=1).set_accelerator_limit(2).set_cpu_limit("8").set_cpu_request("500m").set_memory_limit(
        "32G"
    ).set_memory_request("16Gi")


@dsl.pipeline(name="param-limit")
def param_limit(gpus: int = 4) -> None:
    """A limit from a pipeline parameter; `prepare` runs first, so the two never overlap."""
    p = prepare()
    train(x=1).set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus).after(p)


@dsl.pipeline(name="param-no-default")
def param_no_default(gpus: int) -> None:
    train(x=1).set_accelerator_limit(gpus)


@dsl.pipeline(name="fan-out")
def fan_out(shards: list = [1, 2, 3]) -> None:  # noqa: B006 - KFP takes the default from the signature
    """Two loops: a raw list capped by parallelism, and a parameter list with no cap."""
    with dsl.ParallelFor([1, 2, 3, 4, 5], parallelism=2) as i:
        train(x=i).set_accelerator_type("NVIDIA_H100_80GB").set_accelerator_limit(2)
    with dsl.ParallelFor(shards) as s:
        train(x=s).set_accelerator_type("nvidia-l4").set_accelerator_limit(1)


@dsl.pipeline(name="stage")
def stage(n: int = 2) -> None:
    """A pipeline used as a component inside `nested`, with a loop of its own."""
    with dsl.ParallelFor([1, 2, 3], parallelism=1) as i:
        train(x=i).set_accelerator_type("A100-80GB").set_accelerator_limit(n)


@dsl.pipeline(name="nested")
def nested(n: int = 4) -> None:
    """`stage` twice: in sequence (a second stage waits on the first), and once beside them."""
    first = stage(n=n)
    stage(n=1).after(first)
    stage()


@dsl.pipeline(name="untyped-for-k8s")
def untyped_for_k8s() -> None:
    """A limit with no type; the test adds the node selector kfp-kubernetes would add."""
    train(x=1).set_accelerator_limit(8)


@dsl.pipeline(name="diamond")
def diamond(gpus: int = 2) -> None:
    """a -> (b, c) -> d: b and c may overlap, a and d may not overlap anything."""
    a = train(x=1).set_accelerator_type("H100").set_accelerator_limit(8)
    b = train(x=a.output).set_accelerator_type("H100").set_accelerator_limit(gpus)
    c = train(x=a.output).set_accelerator_type("H100").set_accelerator_limit(3)
    train(x=b.output).set_accelerator_type("H100").set_accelerator_limit(1).after(c)


@dsl.component(base_image=_IMAGE)
def list_shards() -> list:
    return [1, 2]


@dsl.pipeline(name="loop-over-output")
def loop_over_output() -> None:
    """The fan-out is an upstream output: unknowable from the spec, so the caller must say."""
    shards = list_shards()
    with dsl.ParallelFor(shards.output) as s:
        train(x=s).set_accelerator_type("L4").set_accelerator_limit(1)


@metered_component(gpus=2, gpu_type="H100", tags={"team": "search"}, base_image=_IMAGE)
def metered_train(x: int) -> int:
    return x


@dsl.pipeline(name="metered-generic-gpu")
def metered_generic_gpu() -> None:
    """A metered component on a generic ``nvidia.com/gpu``: the type comes from the meter's config."""
    metered_train(x=1)


@metered_component(gpus=1, gpu_type="L4", max_duration="30m", base_image=_IMAGE)
def metered_short(x: int) -> int:
    return x


@dsl.pipeline(name="metered-max-duration")
def metered_max_duration() -> None:
    """A metered component with its own max_duration: the meter stops it at 30 min."""
    metered_short(x=1)
