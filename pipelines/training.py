"""The monthly training pipeline: wiring only (step logic lives in the libraries).

    validate_data ─┬─► eda
                   ├─► train ──────────┬─► evaluate ─┬─► gate ─► export ────┬─► regulatory_packet ─┬─ passed ─► register
                   └─► train_baseline ─┘             └─► clinical_evidence ─┘                      └─ else ───► register
    (register = register_model: `rejected` when the gate failed; a passing version becomes `champion` when none
     exists, else `challenger`, checked against the champion on the same test studies; registry.rollout)

clinical_evidence (error analysis, bias audit, the drift monitor on held-out reference studies) runs beside gate
and export; the packet renders its aggregates and charts.

train and train_baseline depend only on validate_data, so a cluster runs them side by side (kfp.local runs
the DAG one step at a time). On a cluster the train step runs the CUDA image and asks for `train_gpus`
`nvidia.com/gpu` (default 4, the seed's cluster) on a GPU node (node selector + toleration, /dev/shm in memory for
NCCL); it trains data-parallel with one DeepSpeed process per GPU (ZeRO-2 for the demo LM, ZeRO-3 + LoRA for the
production config: `train.deepspeed`). Every other step, train_baseline included, is a CPU step in the CPU image.
Every step reads MLflow / S3 credentials from Kubernetes secrets (`cluster=True`).

`dataset_uri` (default "": the config's data, e.g. the embedded IU X-ray of a local run) names a dataset pushed
with `rrg data push`; validate_data materialises and verifies it, and the steps after it read that copy.
"""

from kfp import dsl, kubernetes

from components.steps import build_components

PIPELINE_NAME = "radiology-report-training"
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SECRETS = {
    "mlflow-credentials": {"MLFLOW_TRACKING_USERNAME": "username", "MLFLOW_TRACKING_PASSWORD": "password"},
    "s3-credentials": {"AWS_ACCESS_KEY_ID": "access_key_id", "AWS_SECRET_ACCESS_KEY": "secret_access_key",
                       "MLFLOW_S3_ENDPOINT_URL": "endpoint_url"},
}


DEFAULT_TRAIN_GPUS = 4          # the seed's training cluster: 4 GPUs per training run
SHM_SIZE = "16Gi"               # NCCL and the data loaders share memory through /dev/shm (64 MiB by default)


def build_pipeline(image: str, cluster: bool = False, train_image: str | None = None):
    """The pipeline function; `cluster` adds GPU scheduling and secret-sourced credentials (compile only).
    `train_image` runs the train step (the CUDA build; default: `image`)."""
    c = build_components(image, train_image)

    def on_cluster(task, gpus=None):
        if not cluster:
            return task
        for secret, keys in SECRETS.items():
            kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={v: k for k, v in keys.items()})
        if gpus is not None:
            task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
            kubernetes.add_node_selector(task, label_key=GPU_NODE_LABEL[0], label_value=GPU_NODE_LABEL[1])
            kubernetes.add_toleration(task, **GPU_TOLERATION)
            kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                       size_limit=SHM_SIZE)
        return task

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Validate, train, evaluate, gate, clinical evidence, export, document, register.")
    def training_pipeline(config_json: str, tracking_uri: str, mlflow_run_id: str, model_name: str,
                          dataset_uri: str = "", train_gpus: int = DEFAULT_TRAIN_GPUS) -> str:
        common = {"tracking_uri": tracking_uri, "mlflow_run_id": mlflow_run_id}
        validated = on_cluster(c.validate_data(config_json=config_json, dataset_uri=dataset_uri, **common))
        data = {"config_json": config_json, "dataset": validated.outputs["dataset"], **common}
        on_cluster(c.eda(**data))
        trained = on_cluster(c.train(num_gpus=train_gpus, **data), gpus=train_gpus)
        baseline = on_cluster(c.train_baseline(**data))
        evaluated = on_cluster(c.evaluate(model=trained.outputs["model"], baseline=baseline.outputs["baseline"],
                                          **data))
        gated = on_cluster(c.gate(config_json=config_json, model=trained.outputs["model"],
                                   evaluation=evaluated.outputs["evaluation"], **common))
        evidence = on_cluster(c.clinical_evidence(model=trained.outputs["model"],
                                                  evaluation=evaluated.outputs["evaluation"], **data))
        exported = on_cluster(c.export(model=trained.outputs["model"], **data))
        exported.after(gated)
        packet = on_cluster(c.regulatory_packet(
            model_name=model_name, dataset=validated.outputs["dataset"], model=trained.outputs["model"],
            evaluation=evaluated.outputs["evaluation"], decision=gated.outputs["decision"],
            evidence=evidence.outputs["evidence"], **common))
        packet.after(exported)
        with dsl.If(gated.outputs["Output"] == True, name="gate-passed"):  # KFP condition syntax (E712 off here)
            promoted = on_cluster(c.register_model(config_json=config_json, model_name=model_name,
                                                   model=trained.outputs["model"],
                                                   evaluation=evaluated.outputs["evaluation"],
                                                   decision=gated.outputs["decision"], **common))
            promoted.set_display_name("register-and-promote")
            promoted.after(packet)
        with dsl.Else(name="gate-failed"):
            rejected = on_cluster(c.register_model(config_json=config_json, model_name=model_name,
                                                   model=trained.outputs["model"],
                                                   evaluation=evaluated.outputs["evaluation"],
                                                   decision=gated.outputs["decision"], **common))
            rejected.set_display_name("register-as-rejected")
            rejected.after(packet)
        return dsl.OneOf(promoted.output, rejected.output)

    return training_pipeline
