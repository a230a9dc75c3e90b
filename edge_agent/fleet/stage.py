"""One rollout stage, judged from what the devices report. Pure: views and
changes in, per-device outcomes and a verdict out; the clock is a parameter.

A device is in the stage when it serves a model the manifest names and the
targeting rules select it (its bucket for the rollout's salt below the stage's
percent, its tags, pinned or excluded ids): the operator computes what each
device computes, so it knows whom to wait for. Outcomes:

- `committed`: every such model reported `committed` (or already served);
- `failed`: `rejected`, `rolled_back` or `failed` for one of the new models, or,
  after the swap, inference errors (the state's `errors` counter grew by more
  than `max_errors`), a drift or confidence alert, or going offline;
- `offline`: offline without a result (not counted either way);
- `skipped`: the device said it is not in the group (an older agent's rules);
- `pending`: nothing yet.

Before a stage goes live, `shadow_tally` sums the shadow reports of the devices
the stage selects: the agreement of the new model, run in shadow beside the
serving one, weighted by the inputs each device compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edge_agent.fleet.view import Change, DeviceView
from edge_agent.update.targeting import Targets, rollout_bucket, selected

FAILURES = ("rejected", "rolled_back", "failed")


@dataclass(frozen=True)
class StagePlan:
    number: int  # 1-based; 0 for the return to the previous models
    percent: float
    version: int  # the manifest version published for the stage
    salt: str | None  # None: no rollout section, every device
    models: Mapping[str, str]  # name -> sha256 (full or 12-hex prefix)
    targets: Mapping[str, Targets | None] = field(default_factory=dict)

    def wants(self, view: DeviceView) -> set[str]:
        """The model names this device should take in this stage."""
        names = {m.name for m in view.models.values()} & set(self.models)
        bucket = None if self.salt is None else rollout_bucket(self.salt, view.device)
        percent = None if self.salt is None else self.percent
        return {
            name
            for name in names
            if selected(self.targets.get(name), view.device, view.tags, bucket, percent)
        }

    def matches(self, name: str, sha: object) -> bool:
        want = self.models.get(name)
        return want is not None and _same(want, sha)

    def serving(self, view: DeviceView) -> set[str]:
        """The stage's models this device serves already."""
        return {m.name for m in view.models.values() if self.matches(m.name, m.sha256)}

    def names(self, sha: object) -> bool:
        """Whether a model with this SHA-256 (or prefix) is one of the stage's."""
        return any(_same(want, sha) for want in self.models.values())


def _same(want: str, sha: object) -> bool:
    return (
        isinstance(sha, str) and len(sha) >= 12 and (want.startswith(sha) or sha.startswith(want))
    )


@dataclass(frozen=True)
class ShadowTally:
    """The shadow reports of a stage's devices, about the stage's new models."""

    online: int  # devices the stage moves, online (or not known to be offline)
    reporting: int  # devices the stage moves with a comparison of a new model
    compared: int  # inputs compared, over all their reports
    agreed: float  # inputs on which the shadow agreed (agreement x compared, summed)
    dropped: tuple[str, ...] = ()  # devices whose shadow was dropped (its reason is theirs)

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def as_dict(self) -> dict[str, object]:
        return {**vars(self), "dropped": list(self.dropped), "agreement": self.agreement}

    def describe(self) -> str:
        dropped = f"; shadow dropped on {', '.join(self.dropped)}" if self.dropped else ""
        return (
            f"shadow agreement {self.agreement or 0.0:.1%} over {self.compared} compared "
            f"input(s) on {self.reporting} device(s){dropped}"
        )

    def verdict(self, gate: float, min_devices: int, pipeline: str | None) -> str | None:
        """None when the stage may go live, else why not."""
        where = f" on pipeline {pipeline}" if pipeline else ""
        if self.reporting < min_devices:
            return (
                f"only {self.reporting} device(s) of the stage reported a shadow comparison "
                f"of the new model{where} (need {min_devices}, --min-devices)"
            )
        if (self.agreement or 0.0) < gate:
            return f"{self.describe()}{where}, below {gate:.1%}"
        return None


def shadow_tally(
    plan: StagePlan, devices: Mapping[str, DeviceView], pipeline: str | None = None
) -> ShadowTally:
    """Sum the last report of each pipeline (or only `pipeline`) whose shadow is one of
    the stage's models, while the serving one is not (a device that took it in an
    earlier stage compares it with itself); a device counts once it compared something."""
    online = reporting = compared = 0
    agreed = 0.0
    dropped: list[str] = []
    for view in devices.values():
        wants = plan.wants(view)
        if not wants or wants <= plan.serving(view):
            continue  # not in the stage, or took the new models in an earlier one
        online += view.online is not False
        reports = [
            r
            for p, r in view.shadows.items()
            if (pipeline is None or p == pipeline)
            and plan.names(r.sha256)
            and not plan.names(r.serving)
        ]
        counted = [r for r in reports if r.compared and r.agreement is not None]
        reporting += bool(counted)
        compared += sum(r.compared for r in counted)
        agreed += sum(r.compared * (r.agreement or 0.0) for r in counted)
        if any(r.state == "dropped" for r in reports):
            dropped.append(view.device)
    return ShadowTally(online, reporting, compared, agreed, tuple(sorted(dropped)))


@dataclass
class Outcome:
    device: str
    wants: set[str]
    state: str = "pending"
    reason: str | None = None
    ts: float | None = None
    committed: set[str] = field(default_factory=set)
    errors: dict[str, int] = field(default_factory=dict)  # at the commit


class StageTracker:
    def __init__(
        self,
        plan: StagePlan,
        devices: Mapping[str, DeviceView],
        now: float,
        max_errors: int = 0,
    ) -> None:
        self.plan = plan
        self.max_errors = max_errors
        self.outcomes: dict[str, Outcome] = {}
        for view in devices.values():
            self.consider(view, now)

    def consider(self, view: DeviceView, now: float) -> None:
        """Add a device (seen at the start, or appearing later) if the stage wants it."""
        if view.device in self.outcomes:
            return
        wants = self.plan.wants(view)
        if not wants:
            return
        outcome = self.outcomes[view.device] = Outcome(view.device, wants)
        if wants <= self._serving(view):
            self._set(outcome, "committed", "already serving it", now)
            outcome.committed = set(wants)
            outcome.errors = dict(view.errors)
        elif view.online is False:
            self._set(outcome, "offline", None, now)

    def observe(self, view: DeviceView, change: Change) -> None:
        outcome = self.outcomes.get(change.device)
        if outcome is None:
            self.consider(view, change.ts)
            return
        if outcome.state in ("failed", "skipped"):
            return
        if self.plan.number == 0 and change.kind not in {"update", "model"}:
            return  # the return judges no health: the errors of a rollback are expected
        if change.kind == "update":
            self._update(outcome, view, change)
        elif change.kind == "status":
            self._status(outcome, change)
        elif change.kind == "model" and self.plan.number == 0 and outcome.state == "pending":
            # The return: a device that rolled back by itself serves the old model
            # again and has nothing to install, hence no "committed" to report.
            if outcome.wants <= self._serving(view):
                self._set(outcome, "committed", "serving it again", change.ts)
        elif change.kind == "errors" and outcome.state == "committed":
            grown = int(change.value or 0) - outcome.errors.get(change.pipeline or "", 0)
            if grown > self.max_errors:
                self._fail(outcome, f"{grown} inference error(s) after the swap", change.ts)
        elif change.kind == "alert" and change.value != "clear" and self._new_model(view, change):
            measure = (change.detail or {}).get("measure")
            self._fail(outcome, f"{measure} {change.value} alert after the swap", change.ts)

    def _update(self, outcome: Outcome, view: DeviceView, change: Change) -> None:
        status = change.detail or {}
        state = status.get("state")
        model = status.get("model") or {}
        ours = self.plan.matches(str(model.get("name")), model.get("sha256"))
        if state in FAILURES and ours:
            self._fail(outcome, f"{state}: {status.get('reason')}", change.ts)
        elif state == "committed" and ours:
            outcome.committed.add(str(model["name"]))
            if outcome.wants <= outcome.committed:
                self._set(outcome, "committed", None, change.ts)
                outcome.errors = dict(view.errors)
        elif state == "skipped" and status.get("manifest_version") == self.plan.version:
            self._set(outcome, "skipped", status.get("reason"), change.ts)

    def _status(self, outcome: Outcome, change: Change) -> None:
        if change.value == "offline":
            if outcome.state == "committed" and self.plan.number > 0:
                self._fail(outcome, "offline after the swap", change.ts)
            elif outcome.state == "pending":
                self._set(outcome, "offline", None, change.ts)
        elif change.value == "online" and outcome.state == "offline":
            self._set(outcome, "pending", None, change.ts)

    def _serving(self, view: DeviceView) -> set[str]:
        return self.plan.serving(view)

    def _new_model(self, view: DeviceView, change: Change) -> bool:
        model = view.models.get(change.pipeline or "")
        return model is not None and self.plan.matches(model.name, model.sha256)

    def _fail(self, outcome: Outcome, reason: str, now: float) -> None:
        self._set(outcome, "failed", reason, now)

    @staticmethod
    def _set(outcome: Outcome, state: str, reason: str | None, now: float) -> None:
        outcome.state, outcome.reason, outcome.ts = state, reason, now

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("committed", "failed", "pending", "offline", "skipped"), 0)
        for outcome in self.outcomes.values():
            counts[outcome.state] += 1
        return counts

    def failure_rate(self) -> float:
        counts = self.counts()
        results = counts["committed"] + counts["failed"]
        return counts["failed"] / results if results else 0.0

    def over_threshold(self, min_devices: int, max_failure: float) -> bool:
        """The early stop: enough results, and too many of them failures."""
        counts = self.counts()
        results = counts["committed"] + counts["failed"]
        return results >= min_devices and self.failure_rate() > max_failure

    def settled(self) -> bool:
        """No device that is online still owes a result."""
        return self.counts()["pending"] == 0
