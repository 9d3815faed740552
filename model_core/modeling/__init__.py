"""Modeling: the multimodal model, tokenizer, generation, production config and the model directory."""
