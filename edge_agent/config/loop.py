"""Settings of the feedback loop: sample capture, the shared sample store and its
uploader, shadow models and accuracy from feedback. Every part is off by default."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

DAY = 86_400.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CaptureSettings(_Strict):
    """`[pipelines.capture]`: which inputs a pipeline keeps, and how many at most."""

    enabled: bool = False
    below: float | None = Field(
        None, ge=0, le=1, description="keep inputs whose top-1 confidence is under this"
    )
    on_drift: bool = Field(True, description="keep inputs seen during a drift episode")
    on_change: bool = Field(False, description="keep the input behind every decision change")
    on_disagreement: bool = Field(True, description="keep inputs the shadow model disagrees on")
    every: int = Field(0, ge=0, le=1_000_000_000, description="keep 1 input in N at random; 0 off")
    per_hour: int = Field(60, ge=1, le=1_000_000, description="at most this many samples an hour")
    ring: int = Field(
        16, ge=0, le=10_000, description="recent event inputs kept for feedback to capture"
    )


class ShadowSettings(_Strict):
    """`[pipelines.shadow]`: a candidate model run beside the serving one, never published."""

    model: Path
    labels: Path | None = None
    version: str = "local"
    every: int = Field(10, ge=1, le=1_000_000, description="run it on 1 input in N")
    report_interval: float = Field(
        60.0, ge=1, le=DAY, description="seconds between two reports on the shadow topic"
    )
    queue: int = Field(2, ge=1, le=1000, description="inputs waiting for the shadow at most")


class FeedbackSettings(_Strict):
    """`[pipelines.feedback]`: accuracy from `{"id", "truth"}` on the feedback topic."""

    enabled: bool = False
    remember: int = Field(1000, ge=1, le=1_000_000, description="recent events matched by id")
    window: int = Field(200, ge=1, le=1_000_000, description="labelled events in the rolling mean")
    min_labelled: int = Field(20, ge=1, le=1_000_000, description="before an alert can be raised")
    threshold: float = Field(0.8, ge=0, le=1, description="accuracy under this raises an alert")
    clear_threshold: float | None = Field(
        None, ge=0, le=1, description="accuracy at or above this clears it; default threshold"
    )

    @model_validator(mode="after")
    def _order(self) -> FeedbackSettings:
        if self.clear_threshold is not None and self.clear_threshold < self.threshold:
            raise ValueError("clear_threshold must not be under threshold")
        return self


class UploadSettings(_Strict):
    """`[samples.upload]`: PUT each sample and its sidecar to a URL template."""

    url: str = Field(
        pattern=r"^https?://",
        description="with {device}, {pipeline} and {name}, e.g. https://h/b/{device}/{name}",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="sent with every PUT")
    timeout: float = Field(30.0, gt=0, le=3600, description="seconds for one request")
    retry_min: float = Field(1.0, gt=0, le=3600, description="first delay after a failure")
    retry_max: float = Field(300.0, gt=0, le=DAY, description="longest delay between retries")
    interval: float = Field(10.0, gt=0, le=DAY, description="seconds between looks for new samples")

    @model_validator(mode="after")
    def _placeholders(self) -> UploadSettings:
        if "{name}" not in self.url:
            raise ValueError("url must contain {name}: every sample needs its own object")
        return self


class SamplesSettings(_Strict):
    """`[samples]`: where captured samples live, how much room they may take."""

    dir: Path | None = Field(None, description="default: state_dir/samples")
    quota_mb: float = Field(200.0, gt=0, le=10_000_000, description="oldest evicted beyond this")
    max_age_days: float = Field(30.0, gt=0, le=3650, description="older samples are evicted")
    queue: int = Field(16, ge=1, le=10_000, description="samples waiting for the disk at most")
    upload: UploadSettings | None = None
