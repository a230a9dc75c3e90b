"""Listening: WAV and raw-PCM sources, the TFLite Micro audio frontend, streaming
(microWakeWord) and window audio models, and the wake-word policy."""
