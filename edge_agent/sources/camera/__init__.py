"""Camera sources, one module per kind; they hand encoded images to the pipeline.

Nothing is imported here, so that loading one kind does not load the others.
"""
