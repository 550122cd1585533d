"""Label and field selectors, parsed into predicates over objects in their JSON form. Pure.

Label selectors follow apimachinery's grammar: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
`a notin (x,y)`, `a` (exists), `!a` (does not exist), joined by commas.
Field selectors: `path=value`, `path==value`, `path!=value`, where path is a dotted JSON path
(metadata.name, metadata.namespace, spec.nodeName, status.phase, involvedObject.uid, ...).
A missing field compares as the empty string, as the real server's field sets do.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import errors

Predicate = Callable[[dict], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str                      # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        # "!=" and "notin" match objects that lack the key, as in apimachinery
        return labels.get(self.key) not in self.values


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*(\S*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse a label selector; raise errors.bad_request on bad syntax (as the server does)."""
    reqs: list[Requirement] = []
    for part in _split_top(text or ""):
        if m := _SET_RE.match(part):
            values = tuple(v.strip() for v in m.group(4).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(3), values))
        elif m := _EQ_RE.match(part):
            op = "=" if m.group(3) in ("=", "==") else "!="
            if not re.fullmatch(_VALUE, m.group(4)):
                raise errors.bad_request(f"unable to parse requirement: values[0]: Invalid value: "
                                         f'"{m.group(4)}": a valid label must be an empty string or '
                                         f"consist of alphanumeric characters, '-', '_' or '.'")
            reqs.append(Requirement(m.group(1), op, (m.group(4),)))
        elif m := _EXISTS_RE.match(part):
            reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
        else:
            raise errors.bad_request(f"unable to parse requirement: {part!r}")
    return reqs


def parse_field_selector(text: str | None) -> list[tuple[str, str, str]]:
    """Parse a field selector into (path, op, value) with op "=" or "!="."""
    out: list[tuple[str, str, str]] = []
    for part in _split_top(text or ""):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not m:
            raise errors.bad_request(f'invalid selector: \'{text}\'; can\'t understand \'{part}\'')
        out.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return out


def field_value(obj: dict, path: str) -> str:
    cur: object = obj
    for step in path.split("."):
        if not isinstance(cur, dict) or step not in cur:
            return ""
        cur = cur[step]
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


def labels_match(reqs: list[Requirement], labels: dict | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


def fields_match(terms: list[tuple[str, str, str]], obj: dict) -> bool:
    for path, op, value in terms:
        if (field_value(obj, path) == value) != (op == "="):
            return False
    return True


def make_predicate(label_selector: str | None, field_selector: str | None) -> Predicate | None:
    """One predicate for both selectors, or None when neither restricts anything."""
    reqs = parse_label_selector(label_selector)
    terms = parse_field_selector(field_selector)
    if not reqs and not terms:
        return None

    def predicate(obj: dict) -> bool:
        return (labels_match(reqs, obj.get("metadata", {}).get("labels"))
                and fields_match(terms, obj))
    return predicate


def selector_matches(selector: Mapping | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels AND matchExpressions); {} matches everything.
    NotIn and DoesNotExist match objects without the key, as in apimachinery."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or ())
        if op == "In" and not (key in labels and labels[key] in values):
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {op!r}")
    return True
