"""edge-agent: int8 TFLite inference on edge boards, decisions over MQTT."""

__version__ = "0.1.0"
