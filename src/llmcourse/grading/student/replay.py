"""Recorded reference results, so that the visible checks work in the student kit, where the references are stubs.

A check compares the student's function with llmcourse's reference (`check_merge` calls `tokens.merge`), and its
cases may use references too (`check_encode` learns merges with `tokens.train_bpe`). The kit ships no reference
bodies, so `llmcourse kit` runs every visible check call of every released notebook once with the full package,
records each call of a stubbed function that the check makes (its arguments and result), and ships those tables.
In the kit each stubbed function is `stub_call(module, name, arguments)`:

- called by a check (`llmcourse.checks.*`): the recorded result for these arguments (tensors matched within
  float round-off, so another CPU's last bits do not matter), as a fresh copy; a scalar loss recorded with its
  gradients keeps them, so a check can still call `.backward()` on it;
- called by a check with arguments nobody recorded (a diagnosis that depends on the student's wrong answer, or a
  result computed from the student's own output): the student's function of the same name in the notebook, if
  written, with a note; else the check fails with a message saying the kit cannot tell more;
- called by anything else (the student's code): `NotImplementedError`, as when the notebook is graded: the
  function is the student's to write.

The tables hold only what the visible cases compute, whose expected values the checks' messages show anyway;
hidden cases are never run at kit build time.

Explained in: README.md, section "Teaching a class".
"""
from __future__ import annotations

import copy
import inspect
import json
import math
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

TABLES = Path(__file__).resolve().parents[2] / "_replay"  # llmcourse/_replay/<module>.pt and index.json
RTOL, ATOL = 1e-5, 1e-6  # recorded float arguments match within round-off of another CPU's BLAS


# --- plain data that torch.load(weights_only=True) reads ---------------------------------------------------

def pack(value: Any) -> Any:
    """Values as torch's safe unpickler allows: Counter and numpy arrays become tagged dicts."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, Counter):
        return {"__replay__": "Counter", "items": [(pack(k), pack(v)) for k, v in value.items()]}
    if isinstance(value, np.ndarray):
        return {"__replay__": "ndarray", "tensor": torch.from_numpy(value.copy())}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, tuple):
        return tuple(pack(v) for v in value)
    if isinstance(value, list):
        return [pack(v) for v in value]
    if isinstance(value, dict):
        return {pack(k): pack(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if callable(value):  # an argument such as activation=torch.relu: recorded by name
        return {"__replay__": "callable", "name": _callable_name(value)}
    raise TypeError(f"cannot record a {type(value).__name__}")


def _callable_name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', None) or ''}.{getattr(fn, '__qualname__', None) or getattr(fn, '__name__', repr(fn))}"


def unpack(value: Any) -> Any:
    if isinstance(value, dict) and value.get("__replay__") == "Counter":
        return Counter({unpack(k): unpack(v) for k, v in value["items"]})
    if isinstance(value, dict) and value.get("__replay__") == "ndarray":
        return value["tensor"].numpy().copy()
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(unpack(v) for v in value)
    if isinstance(value, list):
        return [unpack(v) for v in value]
    if isinstance(value, dict):
        return {k: unpack(v) for k, v in value.items()}
    return value


def same(a: Any, b: Any) -> bool:
    """True if the call arguments `a` (now) and `b` (recorded) are the same, floats within round-off."""
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(a)
    if isinstance(b, dict) and b.get("__replay__") == "ndarray":
        b = b["tensor"]
    if isinstance(b, dict) and b.get("__replay__") == "callable":
        return callable(a) and _callable_name(a) == b["name"]
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        a = a.detach()
        if a.is_floating_point():
            return bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True))
        return bool(torch.equal(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float, np.integer, np.floating)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=RTOL, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


# --- recording, at kit build time --------------------------------------------------------------------------

def bound_arguments(fn: Callable, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults filled in: what `locals()` holds at a stub's first line."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _gradients(arguments: dict[str, Any], result: Any) -> dict[str, torch.Tensor] | None:
    """d(result)/d(argument) for a scalar tensor result that depends on arguments requiring grad."""
    wants = {k: v for k, v in arguments.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    if not wants or not isinstance(result, torch.Tensor) or result.dim() != 0 or not result.requires_grad:
        return None
    grads = torch.autograd.grad(result, list(wants.values()), retain_graph=True, allow_unused=True)
    return {k: g.detach().clone() for k, g in zip(wants, grads) if g is not None}


_DEPTH = [0]  # > 0 while a recorded (or deliberately unrecorded) call runs


@contextmanager
def not_recorded() -> Iterator[None]:
    """Calls inside are not recorded (the reference run in the student's place)."""
    _DEPTH[0] += 1
    try:
        yield
    finally:
        _DEPTH[0] -= 1


@contextmanager
def recording(functions: dict[str, list[str]]) -> Iterator[dict[str, dict[str, list[dict]]]]:
    """While active, every outermost call of `functions` ({module: [names]}) is recorded into the yielded
    tables {module: {name: [{"args": {...}, "result": ..., "grads": ...}]}}. Calls made inside a recorded call
    (the reference's own helpers) are not: in the kit the outer call returns without running them."""
    import importlib

    tables: dict[str, dict[str, list[dict]]] = {m: {} for m in functions}
    depth = _DEPTH
    saved = []

    def wrap(module: str, name: str, fn: Callable) -> Callable:
        def recorder(*args, **kwargs):
            if depth[0]:
                return fn(*args, **kwargs)
            arguments = bound_arguments(fn, args, kwargs)
            depth[0] += 1
            try:
                result = fn(*args, **kwargs)
            finally:
                depth[0] -= 1
            entries = tables[module].setdefault(name, [])
            grads = _gradients(arguments, result)
            known = next((e for e in entries if same(arguments, e["args"])), None)
            if known is None:
                entries.append({"args": pack(arguments), "result": pack(result), "grads": grads})
            elif grads and not known["grads"]:
                known["grads"] = grads
            return result

        recorder.__wrapped__ = fn
        recorder.__name__ = name
        return recorder

    for module, names in functions.items():
        mod = importlib.import_module(module)
        for name in names:
            fn = getattr(mod, name)
            saved.append((mod, name, fn))
            setattr(mod, name, wrap(module, name, fn))
    try:
        yield tables
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


def save_tables(tables: dict[str, dict[str, list[dict]]], where: dict[str, dict[str, str]], folder: Path) -> None:
    """One .pt file per module plus index.json ({module: {function: assignment}})."""
    folder.mkdir(parents=True, exist_ok=True)
    for module, table in tables.items():
        torch.save(table, folder / f"{module}.pt")
    (folder / "index.json").write_text(json.dumps(where, indent=1, sort_keys=True) + "\n", encoding="utf-8")


# --- replaying, in the kit ---------------------------------------------------------------------------------

_loaded: dict[str, dict[str, list[dict]]] = {}
_index: dict[str, dict[str, str]] | None = None


def _table(module: str) -> dict[str, list[dict]]:
    if module not in _loaded:
        path = TABLES / f"{module}.pt"
        _loaded[module] = torch.load(path, weights_only=True) if path.exists() else {}
    return _loaded[module]


def _assignment(module: str, name: str) -> str:
    global _index
    if _index is None:
        path = TABLES / "index.json"
        _index = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return _index.get(module, {}).get(name, "")


def _caller() -> tuple[str, Any]:
    """Who called the stub, past llmcourse's own stubbed modules: ('check', the Check) or ('student', None)."""
    stubbed = set(_index or {}) | set(_loaded)
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        # past the stubbed modules, the course's other code (a reference helper such as window_loss, which the check
        # or the student passes a function to) and torch's wrappers (no_grad, vmap): the first check or student frame
        passing = module.startswith(("llmcourse.", "torch.")) and not module.startswith("llmcourse.checks")
        if module in stubbed or module == __name__ or passing:
            frame = frame.f_back
            continue
        if module.startswith("llmcourse.checks"):
            check = None
            outer = frame
            while outer is not None:  # the Check whose __call__ is running, for messages
                candidate = outer.f_locals.get("self")
                if outer.f_code.co_name == "__call__" and hasattr(candidate, "check_name"):
                    check = candidate
                    break
                outer = outer.f_back
            return "check", check
        return "student", None
    return "student", None


def stub_call(module: str, name: str, arguments: dict[str, Any]) -> Any:
    """The body of every stubbed function in the kit (see the module docstring)."""
    assignment = _assignment(module, name)
    who, check = _caller()
    exercise = f" in exercise {assignment}" if assignment else ""
    if who == "student":
        from llmcourse.grading.student import chain

        found = chain.saved(module, name)
        if found:  # the student's own, saved when its notebook passed (chain.py)
            return chain.call_saved(found, module, name, arguments)
        mine = _student_name(module, name)
        raise NotImplementedError(
            f"`{mine}` is yours to write{exercise}: the course kit has no implementation of "
            f"llmcourse.{module.split('.')[-1]}.{name}."
            + (f" Where a later notebook uses it, {chain.finish_first(assignment, mine)}" if assignment else ""))
    for entry in _table(module).get(name, []):
        if same(arguments, entry["args"]):
            return _with_gradients(unpack(entry["result"]), arguments, entry.get("grads"))
    return _fallback(name, arguments, check, assignment, module)


def _student_name(module: str, name: str) -> str:
    """The name the exercise gives llmcourse's `module.name` (the check's), e.g. greedy_cached -> generate_greedy_cached."""
    from llmcourse import checks

    return next((c.name for c in checks.REGISTRY.values()
                 if getattr(c.reference, "__module__", "") == module and c.reference.__name__ == name), name)


def _with_gradients(result: Any, arguments: dict[str, Any], grads: dict[str, torch.Tensor] | None) -> Any:
    """The recorded value, joined to the current arguments by their recorded gradients (a first-order term that is
    exactly zero in value), so that `.backward()` on it gives the reference's gradients."""
    if not grads or not isinstance(result, torch.Tensor):
        return result
    for key, grad in grads.items():
        x = arguments.get(key)
        if isinstance(x, torch.Tensor) and x.requires_grad:
            result = result + ((x - x.detach()) * grad.to(x.dtype)).sum().to(result.dtype)
    return result


_noted: set[tuple[str, str]] = set()


_trusted: dict[tuple[str, str, int], bool] = {}


def _agrees_with_records(own: Any, module: str, name: str, most: int = 3) -> bool:
    """Whether the student's `own` function gives the recorded reference results on the recorded inputs (the first
    `most`): only then may it stand in for the reference (a wrong one would judge the student by their mistake).
    Decided once per function object."""
    key = (module, name, id(own))
    if key not in _trusted:
        _trusted[key] = True
        for entry in _table(module).get(name, [])[:most]:
            try:
                if not _close(_call_own(own, [unpack(v) for v in entry["args"].values()]), unpack(entry["result"])):
                    _trusted[key] = False
            except Exception:
                _trusted[key] = False
    return _trusted[key]


def _call_own(own: Any, values: list) -> Any:
    """The student's version of a reference, on copies of the first arguments it takes."""
    from llmcourse.grading.student import chain

    return own(*copy.deepcopy(chain.positional(own, values)))


def _close(got: Any, want: Any) -> bool:
    """Equal up to float round-off (1e-3 relative), through tuples, lists and dicts."""
    if isinstance(want, (torch.Tensor, np.ndarray)):
        want = torch.as_tensor(want)
        got = torch.as_tensor(np.asarray(got) if not isinstance(got, torch.Tensor) else got.detach())
        return got.shape == want.shape and torch.allclose(got.double(), want.double(), rtol=1e-3, atol=1e-4)
    if isinstance(want, (tuple, list)):
        return isinstance(got, (tuple, list)) and len(got) == len(want) and all(map(_close, got, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, float):
        return isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-6)
    return got == want


def _fallback(name: str, arguments: dict[str, Any], check: Any, assignment: str, module: str = "") -> Any:
    """No record for these arguments: use the student's own function of that name from the notebook, if it agrees
    with the reference where the kit knows the reference's results, or fail."""
    from llmcourse.checks.core import CheckFailed

    checked = getattr(check, "name", "your function")
    own = getattr(sys.modules.get("__main__"), name, None)
    if (name != checked and callable(own) and not getattr(own, "__module__", "").startswith("llmcourse")
            and (not module or _agrees_with_records(own, module, name))):
        try:
            result = _call_own(own, list(arguments.values()))
        except Exception:
            result = None
        else:
            if (checked, name) not in _noted:
                _noted.add((checked, name))
                print(f"(note: the course kit checks `{checked}` here with your own `{name}`; "
                      "grading uses llmcourse's.)")
            return result
    raise CheckFailed(
        f"`{checked}` does not give the reference's result on this case, and the course kit cannot say more: "
        f"it needs llmcourse's own `{name}` for an input it has no record of"
        + (f" (write `{name}`{' in exercise ' + assignment if assignment else ''} and the kit uses yours)" if name != checked else "")
        + ". Your grading feedback will say what is wrong.")
