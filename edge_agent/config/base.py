"""What every settings model shares: strict models (unknown keys refused, no NaN
or infinity), and the bounded number types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# An int in 0..2 rather than Literal[0, 1, 2]: an EDGE_AGENT_* variable arrives as a
# string, which pydantic converts to an int but never to a literal.
Qos = Annotated[int, Field(ge=0, le=2)]
DAY = 86_400.0
Fraction = Annotated[float, Field(ge=0, le=1)]


class Strict(BaseModel):
    # No NaN or infinity anywhere: `threshold = nan` is refused at its own key.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
