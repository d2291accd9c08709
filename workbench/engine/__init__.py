"""The speech engine: audio in, a speaker-attributed transcript out.

`audio` (decoding, renditions), `asr` (model store, transcription), `diarization`
(segmentation, CAM++ embeddings, clustering, the Diarizer), `transcript` (result types,
word-to-speaker merge), `formats` (every file format read or written), `pipeline` (the
whole run), `config` (run options; imports no model library), `progress` (the hook type)
and `provenance` (checksums, package versions).

Importing this package imports nothing heavy: the server reads `engine.config` and
`engine.audio` without loading torch.
"""
