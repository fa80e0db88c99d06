"""Curation of a Dataset's events: balanced sampling across a group, exact-duplicate removal.

Both return ``(dataset, report)``: a Dataset over the kept entries (same filters, cache and
settings) and a dict saying what was removed and why.
"""
import hashlib
import random

from .dataset import attribution

__all__ = ["balance", "remove_duplicates", "group_of"]


def _ident(entry):
    return {"object_key": entry["object_key"], "offset": int(entry.get("offset", 0)),
            "length": int(entry.get("length", 0)), "device": entry.get("device", ""),
            "event_id": entry.get("event_id", "")}


def group_of(by):
    """entry -> group name for ``by``: "trigger" (the event's first trigger: the one that opened
    it), "device", "stream", "campaign" ("id@version"), "label:NAME", or a callable(entry)."""
    if callable(by):
        return by
    if by == "trigger":
        return lambda e: (e.get("trigger_ids") or [None])[0]
    if by in ("device", "stream"):
        return lambda e: e.get(by)
    if by == "campaign":
        def campaign(e):
            cid, ver, _ = attribution(e)
            return None if cid is None else "%s@%s" % (cid, ver)
        return campaign
    if isinstance(by, str) and by.startswith("label:"):
        name = by[len("label:"):]
        return lambda e: attribution(e)[2].get(name)
    raise ValueError("balance: by=%r (use trigger, device, stream, campaign, label:NAME or a "
                     "callable)" % (by,))


def balance(dataset, by="trigger", per_group=None, seed=0):
    """At most ``per_group`` events of each group (default: as many as the smallest group has),
    drawn at random (deterministic by ``seed``), kept in the dataset's order, so that one busy
    store or trigger does not dominate. Events without the group's field form the group None.

    Report: ``{"by", "per_group", "groups": {name: {"available", "kept", "removed"}},
    "removed": [{object_key, offset, length, device, event_id, group}]}``."""
    key = group_of(by)
    entries = dataset.entries()
    groups = {}
    for i, e in enumerate(entries):
        groups.setdefault(key(e), []).append(i)
    if per_group is None:
        per_group = min((len(v) for v in groups.values()), default=0)
    rng = random.Random("balance/%s" % (seed,))
    keep = set()
    report = {"by": by if isinstance(by, str) else getattr(by, "__name__", "callable"),
              "per_group": per_group, "groups": {}, "removed": []}
    for name in sorted(groups, key=lambda g: (g is None, str(g))):
        idx = groups[name]
        chosen = set(rng.sample(idx, min(per_group, len(idx))))
        keep |= chosen
        report["groups"][name] = {"available": len(idx), "kept": len(chosen),
                                  "removed": len(idx) - len(chosen)}
        report["removed"] += [dict(_ident(entries[i]), group=name) for i in idx if i not in chosen]
    return dataset.subset(e for i, e in enumerate(entries) if i in keep), report


def remove_duplicates(dataset, content=True):
    """Removes exact duplicates, keeping the first in the dataset's order: the same event
    (device and event id) delivered twice — a re-upload after a crash under another key — and,
    with ``content=True``, events whose bytes are identical (this fetches every event, through
    the cache; an event that cannot be fetched is kept, and skipped later when read).

    Report: ``{"checked", "kept", "removed": [{object_key, offset, length, device, event_id,
    reason: "same event id" | "same content", duplicate_of: {...}}]}``."""
    entries = dataset.entries()
    first = {}
    kept, removed = [], []
    for e in entries:
        ident = (e.get("device", ""), e.get("event_id", ""))
        if ident[1] and ident in first:
            removed.append(dict(_ident(e), reason="same event id", duplicate_of=_ident(first[ident])))
            continue
        first.setdefault(ident, e)
        kept.append(e)
    if content:
        seen = {}
        dropped = set()
        for e, data in dataset.subset(kept).fetched(kept):
            digest = hashlib.sha256(data).digest()
            if digest in seen:
                dropped.add(id(e))
                removed.append(dict(_ident(e), reason="same content",
                                    duplicate_of=_ident(seen[digest])))
            else:
                seen[digest] = e
        kept = [e for e in kept if id(e) not in dropped]
    report = {"checked": len(entries), "kept": len(kept), "removed": removed}
    return dataset.subset(kept), report
