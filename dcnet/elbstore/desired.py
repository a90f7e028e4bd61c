"""What an agent follows: the current model revision and the registered backends (pure).

An agent starts from a snapshot (the backends' prefix read, then the current pointer and
its model revision) and applies the watch's events in order from the snapshot's revision
on. Events carry everything a change needs: a push or a rollback puts the new model
revision and the pointer in one transaction, so the model arrives with the event. A
model the events did not bring (a pointer moved by hand to an old revision) is reported
by :meth:`DesiredState.missing_model` for the agent to fetch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dcnet.elbstore.keys import Keys
from dcnet.elbstore.records import ModelRevision, RecordError, decode_backend, decode_current

MAX_PROBLEMS = 100          # unreadable keys remembered (a service may write garbage often)


@dataclass
class DesiredState:
    keys: Keys
    revision: int = 0                                 # etcd revision seen so far
    current: int | None = None                        # model revision in force
    models: dict[int, ModelRevision] = field(default_factory=dict)
    registry: dict[str, dict[str, dict]] = field(default_factory=dict)
    # (JOBNAME, ADDR[:PORT]) -> mod_revision of its backend key (drain reports name it)
    records: dict[tuple[str, str], int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)   # unreadable keys, latest last

    def load_snapshot(self, current_kv, model_kv, backend_kvs, revision: int) -> None:
        """Replace everything by a snapshot (keys read at or after ``revision``)."""
        self.current, self.models, self.registry, self.problems = None, {}, {}, []
        self.records = {}
        if current_kv is not None:
            self._put(current_kv.key, current_kv.value)
        if model_kv is not None:
            self._put(model_kv.key, model_kv.value)
        for kv in backend_kvs:
            self._put(kv.key, kv.value, kv.mod_revision)
        self.revision = max(self.revision, revision)

    def apply_events(self, revision: int, events) -> bool:
        """Apply one watch response; True when the desired state changed."""
        changed = False
        for event in events:
            if event.kind == "put":
                changed |= self._put(event.kv.key, event.kv.value, event.kv.mod_revision)
            else:
                changed |= self._delete(event.kv.key)
        self.revision = max(self.revision, revision)
        return changed

    def missing_model(self) -> int | None:
        if self.current is not None and self.current not in self.models:
            return self.current
        return None

    def add_model(self, record: ModelRevision) -> None:
        self.models[record.revision] = record
        self._forget_old_models()

    @property
    def model(self) -> ModelRevision | None:
        return self.models.get(self.current) if self.current is not None else None

    # ------------------------------------------------------------------ keys

    def _put(self, key: str, value: bytes, mod_revision: int = 0) -> bool:
        what = self.keys.parse(key)
        try:
            if what[0] == "current":
                revision = decode_current(value, key)
                changed = revision != self.current
                self.current = revision
                self._forget_old_models()
                return changed
            if what[0] == "model":
                record = ModelRevision.decode(value, key)
                self.models[what[1]] = record
                self._forget_old_models()
                return what[1] == self.current
            if what[0] == "backend":
                _, job, ident = what
                entry = decode_backend(ident, value, key)
                entries = self.registry.setdefault(job, {})
                # drained again (the same entry rewritten): a new drain for agents to report
                changed = entries.get(ident) != entry or (
                    entry["state"] == "draining" and self.records.get((job, ident)) != mod_revision)
                entries[ident] = entry
                self.records[(job, ident)] = mod_revision
                return changed
        except RecordError as exc:
            self.problems.append(str(exc))
            del self.problems[:-MAX_PROBLEMS]
        return False

    def _delete(self, key: str) -> bool:
        what = self.keys.parse(key)
        if what[0] == "backend":
            _, job, ident = what
            entries = self.registry.get(job, {})
            self.records.pop((job, ident), None)
            if ident in entries:
                del entries[ident]
                if not entries:
                    del self.registry[job]
                return True
        if what[0] == "current":
            changed = self.current is not None
            self.current = None
            return changed
        if what[0] == "model":
            self.models.pop(what[1], None)
        return False

    def _forget_old_models(self) -> None:
        """Keep only the current revision and any newer one (history stays in etcd)."""
        if self.current is None:
            return
        for revision in [r for r in self.models if r < self.current]:
            del self.models[revision]
