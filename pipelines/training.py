"""The monthly training pipeline: wiring only (step logic lives in the libraries).

    validate_data ─┬─► eda
                   ├─► train ──────────┬─► evaluate ─► gate ─► export ─► regulatory_packet ─┬─ passed ─► register_model
                   └─► train_baseline ─┘                                                    └─ else ───► register_model
    (register_model marks the version `champion` when the gate passed, `rejected` otherwise)

train and train_baseline depend only on validate_data, so a cluster runs them side by side (kfp.local runs
the DAG one step at a time). On a cluster the train step asks for one `nvidia.com/gpu` on a GPU node (node
selector + toleration); every other step, train_baseline included, is a CPU step. Every step reads MLflow / S3
credentials from Kubernetes secrets (`cluster=True`).
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


def build_pipeline(image: str, cluster: bool = False):
    """The pipeline function; `cluster` adds GPU scheduling and secret-sourced credentials (compile only)."""
    c = build_components(image)

    def on_cluster(task, gpu: bool = False):
        if not cluster:
            return task
        for secret, keys in SECRETS.items():
            kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={v: k for k, v in keys.items()})
        if gpu:
            task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
            kubernetes.add_node_selector(task, label_key=GPU_NODE_LABEL[0], label_value=GPU_NODE_LABEL[1])
            kubernetes.add_toleration(task, **GPU_TOLERATION)
        return task

    @dsl.pipeline(name=PIPELINE_NAME, description="Validate, train, evaluate, gate, export, document, register.")
    def training_pipeline(config_json: str, tracking_uri: str, mlflow_run_id: str, model_name: str) -> str:
        common = {"tracking_uri": tracking_uri, "mlflow_run_id": mlflow_run_id}
        validated = on_cluster(c.validate_data(config_json=config_json, **common))
        on_cluster(c.eda(config_json=config_json, dataset=validated.outputs["dataset"], **common))
        trained = on_cluster(c.train(config_json=config_json, dataset=validated.outputs["dataset"], **common), gpu=True)
        baseline = on_cluster(c.train_baseline(config_json=config_json, dataset=validated.outputs["dataset"], **common))
        evaluated = on_cluster(c.evaluate(config_json=config_json, model=trained.outputs["model"],
                                          baseline=baseline.outputs["baseline"], **common))
        gated = on_cluster(c.gate(config_json=config_json, evaluation=evaluated.outputs["evaluation"], **common))
        exported = on_cluster(c.export(config_json=config_json, model=trained.outputs["model"], **common))
        exported.after(gated)
        packet = on_cluster(c.regulatory_packet(
            model_name=model_name, dataset=validated.outputs["dataset"], model=trained.outputs["model"],
            evaluation=evaluated.outputs["evaluation"], decision=gated.outputs["decision"], **common))
        packet.after(exported)
        with dsl.If(gated.outputs["Output"] == True, name="gate-passed"):  # KFP condition syntax (E712 off here)
            promoted = on_cluster(c.register_model(model_name=model_name, model=trained.outputs["model"],
                                                   decision=gated.outputs["decision"], **common))
            promoted.set_display_name("register-and-promote")
            promoted.after(packet)
        with dsl.Else(name="gate-failed"):
            rejected = on_cluster(c.register_model(model_name=model_name, model=trained.outputs["model"],
                                                   decision=gated.outputs["decision"], **common))
            rejected.set_display_name("register-as-rejected")
            rejected.after(packet)
        return dsl.OneOf(promoted.output, rejected.output)

    return training_pipeline
