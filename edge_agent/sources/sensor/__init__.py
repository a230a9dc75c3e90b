"""Sensor sources, one module per kind, and the pure parts they share: line
parsing, the CSV block parser and the sliding window.

Nothing is imported here, so that loading one kind does not load the others
(the lines source has no need of paho).
"""
