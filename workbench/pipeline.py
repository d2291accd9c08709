"""Short entry point: ``from workbench.pipeline import PipelineConfig, transcribe``.

The pipeline lives in `workbench.engine.pipeline`."""

from workbench.engine.pipeline import PipelineConfig, get_pipeline, transcribe

__all__ = ["PipelineConfig", "get_pipeline", "transcribe"]
