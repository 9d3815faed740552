"""Kubeflow cluster use: compile the pipeline to IR YAML, and schedule the monthly recurring run."""

import os
from pathlib import Path

import kfp
from kfp import compiler

from model_core import __version__
from pipelines.training import build_pipeline

MONTHLY_CRON = "0 0 2 1 * *"          # KFP cron has a seconds field: 02:00 on the 1st of every month
MONTHLY_CRON_5 = "0 2 1 * *"          # the same schedule in classic 5-field cron
CUDA_TAG_SUFFIX = "-cuda"             # the train step's image: docker/Dockerfile.cuda, tagged <version>-cuda


def component_image(image_registry: str, name: str = "rrg-components", tag: str = __version__) -> str:
    if not image_registry or image_registry.endswith("/"):
        raise ValueError(f"--image-registry must look like registry.example.org/team, got {image_registry!r}")
    return f"{image_registry}/{name}:{tag}"


def compile_pipeline(out: str | os.PathLike, image_registry: str) -> Path:
    """Compile the cluster variant (the train step on GPUs in the CUDA image, the CPU image for the rest,
    secret-sourced credentials) to Kubeflow IR YAML."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")  # the compiler wants a .yaml suffix
    pipeline = build_pipeline(component_image(image_registry), cluster=True,
                              train_image=component_image(image_registry, tag=f"{__version__}{CUDA_TAG_SUFFIX}"))
    compiler.Compiler().compile(pipeline, str(tmp))
    os.replace(tmp, out)
    return out


def schedule_monthly(host: str, package_path: str | os.PathLike, experiment: str = "radiology-report-generator",
                     job_name: str = "rrg-monthly-retrain", params: dict | None = None, cron: str = MONTHLY_CRON,
                     existing_token: str | None = None):
    """Create the monthly recurring run on a KFP API server (kfp.Client)."""
    client = kfp.Client(host=host, existing_token=existing_token)
    exp = client.create_experiment(name=experiment)
    return client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=job_name, cron_expression=cron,
        pipeline_package_path=str(package_path), params=params or {}, enabled=True, max_concurrency=1, no_catchup=True)
