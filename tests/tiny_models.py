"""Tiny configurations (hidden 32, 2 layers, 32-px images) shared by the tests."""


def tiny_model_config():
    """Hidden 32, 2 layers, 32-px images: the whole model runs on a CPU in milliseconds."""
    from model_core.config import ModelConfig, TextConfig, VisionConfig

    return ModelConfig(
        vision=VisionConfig(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2,
                            intermediate_size=64, pool_tokens=4),
        text=TextConfig(hidden_size=32, num_layers=2, num_heads=2, max_positions=512, vocab_size=400, dropout=0.0),
        projector_hidden=64,
    )


def tiny_train_config(deepspeed: str | None = None):
    from model_core.config import StageConfig, TrainConfig

    return TrainConfig(batch_size=4, deepspeed=deepspeed, max_report_tokens=48,
                       stage0_encoder=StageConfig(1, 1e-3), stage0_lm=StageConfig(1, 1e-3),
                       stage1=StageConfig(1, 1e-3), stage2=StageConfig(2, 1e-3))
