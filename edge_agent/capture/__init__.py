"""Closing the loop: keep the inputs a model struggles with (capture), compare a
candidate model in shadow, and measure accuracy from the field's feedback."""
