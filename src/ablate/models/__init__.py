"""ablate.models: vision encoder -> MLP projector -> small LM, built from the `encoder`, `lm`, `tuning`, `freeze` groups.

build.build_vlm(cfg, tokenizer) builds the VLM; adapt.configure_stage(vlm, stage, cfg) sets what trains;
encoder.num_image_tokens / valid_resolution and build.check_checkpoint serve config validation. See docs/models.md.
"""
