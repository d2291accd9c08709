"""Speaker diarization with pyannote.audio: `embedding` (the CAM++ speaker-embedding
model), `segmentation` (pyannote pipelines, run splitting), `clustering` (run
clustering) and `diarizer` (the `Diarizer`, its results and model identity)."""
