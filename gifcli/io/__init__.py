"""Files: checkpoints (safetensors + metadata), mask/index JSON, influence files, reports."""
