"""Input sources: cameras yield encoded frames, sensors yield sample windows."""
