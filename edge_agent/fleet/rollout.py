"""`edge-agent fleet rollout`: staged, watched, self-halting model rollouts.

For each stage (e.g. 5, 25, 100 percent) it signs and publishes the operator's
manifest as a new version with that percent, nudges the fleet, and watches the
devices the stage selects until each has a result (or `stage_timeout`), then
for `soak` more seconds. It moves on only when the stage is healthy. It halts
as soon as more than `max_failure` of at least `min_devices` results are
failures (AWS IoT Jobs' abortConfig rule), or at the end of a stage whose
failure rate is over `max_failure` or that got no result at all; it then
publishes the previous manifest's models at a higher version (no percent: every
device) and waits for the devices that took the new model to return.

With `min_shadow_agreement`, a stage goes live only when the new model, run in
shadow on the stage's devices, agrees with the serving one often enough: before
publishing the stage it reads their periodic shadow reports (until each device
of the stage reported or `shadow_wait`) and halts unless at least `min_devices`
reported and their agreement, weighted by the inputs compared, reaches it.
"""

from __future__ import annotations

import itertools
import logging
import queue
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

from edge_agent.errors import ConfigError
from edge_agent.fleet import report
from edge_agent.fleet.history import History
from edge_agent.fleet.observe import BrokerOptions, FleetObserver
from edge_agent.fleet.publish import Document, Publisher, render, sign
from edge_agent.fleet.stage import Outcome, StagePlan, StageTracker, shadow_tally
from edge_agent.fleet.view import Change
from edge_agent.update import keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolloutOptions:
    manifest: Path  # the new models, as `edge-agent manifest create` wrote them
    previous: Path  # the manifest the fleet runs now: what a halt returns to
    key: Path
    stages: tuple[float, ...] = (5.0, 25.0, 100.0)
    min_devices: int = 10
    max_failure: float = 0.05
    soak: float = 600.0
    stage_timeout: float = 1800.0
    settle: float = 5.0  # seconds to read the retained topics before starting
    max_errors: int = 0  # inference errors tolerated per device after the swap
    salt: str | None = None  # default: a new random one, so this rollout picks its own 5%
    valid_for: timedelta = timedelta(days=30)
    poll: float = 0.2
    min_shadow_agreement: float | None = None  # None: no shadow gate
    shadow_pipeline: str | None = None  # None: the reports of every pipeline
    shadow_wait: float = 180.0  # seconds to gather a stage's shadow reports

    def __post_init__(self) -> None:
        stages = self.stages
        if not stages or any(b <= a for a, b in itertools.pairwise(stages)):
            raise ConfigError("--stages: percents must rise, e.g. 5,25,100")
        if stages[0] <= 0 or stages[-1] > 100:
            raise ConfigError("--stages: percents must be in (0, 100]")
        if not 0 <= self.max_failure < 1:
            raise ConfigError("--max-failure: a fraction in [0, 1), e.g. 0.05")
        gate = self.min_shadow_agreement
        if gate is not None and not 0 <= gate <= 1:
            raise ConfigError("--min-shadow-agreement: a fraction in [0, 1], e.g. 0.95")
        if gate is None and self.shadow_pipeline is not None:
            raise ConfigError("--shadow-pipeline: only with --min-shadow-agreement")


@dataclass
class Result:
    completed: bool
    halted_at: int | None  # stage number
    reason: str | None
    rows: list[dict[str, object]]
    returned: dict[str, int] | None  # the return to the previous models' counts
    gates: list[dict[str, object]] = field(default_factory=list)  # shadow tally per stage


Clock = Callable[[], float]


class Rollout:
    def __init__(
        self,
        options: RolloutOptions,
        broker: BrokerOptions,
        publisher: Publisher,
        *,
        history: History | None = None,
        out: TextIO | None = None,  # default: sys.stderr at the time
        clock: Clock = time.monotonic,
    ) -> None:
        self.options = options
        self.publisher = publisher
        self.history = history
        self.out = out
        self.clock = clock
        self.base = Document.read(options.manifest)
        self.previous = Document.read(options.previous)
        self.key = keys.load_private_key(options.key)
        self.salt = options.salt or secrets.token_hex(8)
        self._changes: queue.Queue[list[Change]] = queue.Queue()
        self.observer = FleetObserver(broker, self._changes.put)
        self._outcomes: dict[str, tuple[int, Outcome]] = {}
        self._last_line = ""
        self._gates: list[dict[str, object]] = []

    def run(self) -> Result:
        self.observer.start()
        try:
            self.observer.settle(self.options.settle)
            self._drain(None)
            return self._run()
        finally:
            self.observer.stop()
            if self.history is not None:
                self.history.flush()

    def _run(self) -> Result:
        version = max(self.base.version, self.previous.version)
        stages = self.options.stages
        for number, percent in enumerate(stages, start=1):
            version += 1
            plan = StagePlan(
                number, percent, version, self.salt, self.base.models, self.base.targets
            )
            reason = self._shadow_gate(plan)
            if reason is not None and number == 1:  # nothing published yet: nothing to undo
                self._say(f"HALTED before stage 1 ({percent:g}%): {reason}")
                return Result(False, number, reason, self._rows(), None, self._gates)
            if reason is None:
                self._publish(plan)
                reason = self._watch(plan, len(stages))
            if reason is not None:
                self._say(f"HALTED at stage {number} ({percent:g}%): {reason}")
                returned = self._return(version + 1)
                return Result(False, number, reason, self._rows(), returned, self._gates)
        self._say(f"rollout complete: manifest version {version} at {stages[-1]:g}%")
        return Result(True, None, None, self._rows(), None, self._gates)

    def _shadow_gate(self, plan: StagePlan) -> str | None:
        """None when the stage may go live, else why not (see the module's note)."""
        opts = self.options
        if opts.min_shadow_agreement is None:
            return None
        deadline = self.clock() + opts.shadow_wait
        while True:
            self._drain(None)
            tally = shadow_tally(plan, self.observer.snapshot(), opts.shadow_pipeline)
            self._progress(
                f"stage {plan.number}: shadow reports from {tally.reporting} of "
                f"{tally.online} device(s)"
            )
            if tally.reporting >= tally.online or self.clock() >= deadline:
                break
            time.sleep(opts.poll)
        self._gates.append({"stage": plan.number, **tally.as_dict()})
        reason = tally.verdict(opts.min_shadow_agreement, opts.min_devices, opts.shadow_pipeline)
        if reason is None:
            self._say(f"stage {plan.number}: {tally.describe()}: going live")
        return reason

    def _publish(self, plan: StagePlan) -> None:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        percent = None if plan.salt is None else plan.percent
        source = self.base if plan.number else self.previous
        data = render(
            source,
            version=plan.version,
            percent=percent,
            salt=plan.salt,
            now=now,
            valid_for=self.options.valid_for,
        )
        self.publisher.publish(data, sign(self.key, data))
        self.observer.nudge({"v": 1, "version": plan.version})
        self._say(f"published manifest version {plan.version}; nudged the fleet")

    def _watch(self, plan: StagePlan, stages: int) -> str | None:
        """None when the stage is healthy after the soak, else why it halts."""
        opts = self.options
        tracker = StageTracker(plan, self.observer.snapshot(), time.time(), opts.max_errors)
        deadline = self.clock() + opts.stage_timeout
        soak_until: float | None = None
        while True:
            self._drain(tracker)
            self._record(plan.number, tracker)
            self._progress(
                report.progress_line(plan.number, stages, plan.percent, tracker.counts())
            )
            if tracker.over_threshold(opts.min_devices, opts.max_failure):
                return self._rate(tracker)
            now = self.clock()
            if soak_until is None and (tracker.settled() or now >= deadline):
                soak_until = now + opts.soak
                if opts.soak:
                    self._say(f"stage {plan.number}: results in; soaking {opts.soak:g} s")
            if soak_until is not None and now >= soak_until:
                return self._verdict(tracker)
            time.sleep(opts.poll)

    def _verdict(self, tracker: StageTracker) -> str | None:
        counts = tracker.counts()
        if tracker.outcomes and counts["committed"] + counts["failed"] == 0:
            return "no device in the stage reported a result"
        if tracker.failure_rate() > self.options.max_failure:
            return self._rate(tracker)
        return None

    def _rate(self, tracker: StageTracker) -> str:
        counts = tracker.counts()
        results = counts["committed"] + counts["failed"]
        return (
            f"{counts['failed']} of {results} results failed ({tracker.failure_rate():.0%}, "
            f"more than {self.options.max_failure:.0%})"
        )

    def _return(self, version: int) -> dict[str, int]:
        """Publish the previous models to every device; wait for those that moved."""
        plan = StagePlan(0, 100.0, version, None, self.previous.models, {})
        self._publish(plan)
        tracker = StageTracker(plan, self.observer.snapshot(), time.time())
        deadline = self.clock() + self.options.stage_timeout
        while not tracker.settled() and self.clock() < deadline:
            self._drain(tracker)
            self._progress(report.progress_line(0, 0, 100, tracker.counts()))
            time.sleep(self.options.poll)
        self._drain(tracker)
        counts = tracker.counts()
        self._say(
            f"returned to the previous models (manifest version {version}): "
            f"{counts['committed']} of {sum(counts.values())} devices serve them"
        )
        return counts

    def _drain(self, tracker: StageTracker | None) -> None:
        while True:
            try:
                changes = self._changes.get_nowait()
            except queue.Empty:
                return
            if self.history is not None:
                self.history.add(changes)
            for change in changes if tracker is not None else ():
                view = self.observer.device(change.device)
                if view is not None and tracker is not None:
                    tracker.observe(view, change)

    def _record(self, number: int, tracker: StageTracker) -> None:
        for device, outcome in tracker.outcomes.items():
            self._outcomes[device] = (number, outcome)

    def _rows(self) -> list[dict[str, object]]:
        return report.rollout_rows(self._outcomes.values())

    def _progress(self, line: str) -> None:
        if line != self._last_line:
            self._last_line = line
            print(line, file=self.out or sys.stderr, flush=True)

    def _say(self, line: str) -> None:
        print(line, file=self.out or sys.stderr, flush=True)


def stages_from(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--stages {text}: expected percents like 5,25,100") from None


def run_rollout(
    options: RolloutOptions, broker: BrokerOptions, publisher: Publisher, history: History | None
) -> Result:
    return Rollout(options, broker, publisher, history=history).run()
