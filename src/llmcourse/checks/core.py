"""What every graded check shares: run the student's function, turn its result into plain data, compare.

A `Check` has three parts, so that the comparison can happen where student code cannot reach it:

- `cases(**params)`: the argument tuples the student's function is called with (seeded, may use the
  reference, e.g. to learn merges that `encode` then uses);
- `output(value)`: the student's return value turned into plain data (floats, ints, strings, lists,
  numpy arrays), or a `CheckFailed` saying what type was expected;
- `compare(args, plain)`: the plain result judged against the reference, with a message that teaches.

At home, calling a check runs all three in the notebook and raises the first message. When a notebook is
graded (`LLMCOURSE_GRADING` names a folder), the kernel only runs the student's function on cases the
grader wrote there and records the plain outputs; the grader then calls `judge` in its own process, with
the reference out of the kernel's reach (see README, "Grading").

Explained in: README.md, sections "Authors" and "Grading".
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import os
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

ATOL = 1e-5  # absolute tolerance for float results
RTOL = 1e-4  # relative tolerance for float results
GRADING_ENV = "LLMCOURSE_GRADING"  # set by the grader: folder with cases/ and records.jsonl
REGISTRY: dict[str, "Check"] = {}  # check name (as called in test cells) -> Check


class CheckFailed(AssertionError):
    """A graded check failed; the message says what is wrong, in the course's terms.

    In a notebook, IPython shows an exception that has `_render_traceback_` by the lines it returns: the student
    sees the message alone, not a traceback through the course's check code (grading reads `ename`/`evalue`,
    which stay as they are)."""

    def _render_traceback_(self) -> list[str]:
        red, reset = "\x1b[31m", "\x1b[0m"
        lines = str(self).splitlines() or [""]
        return [f"{red}{type(self).__name__}{reset}: {lines[0]}", *lines[1:]]


def fail(message: str) -> None:
    raise CheckFailed(message)


@dataclass(frozen=True)
class Check:
    """A graded check; test cells call it like a function: `check_merge(merge)`."""
    name: str                                   # the student's function, e.g. "merge"
    reference: Callable                         # llmcourse's own implementation, refused in student code
    cases: Callable[..., list[tuple]]           # (**params) -> argument tuples
    output: Callable[[Any, str], Any]           # (student's value, name) -> plain data
    compare: Callable[[tuple, Any], None]       # (args, plain result) -> raises CheckFailed
    passed: str                                 # printed after ✓ when every case passes
    crash_hint: str = ""                         # added to the message when the student's function crashes
    forbidden: tuple[str, ...] = ()             # torch functions that do the exercise's work: using one scores 0
    inputs_after: tuple[int, ...] = ()          # arguments the task changes in place: their state after the
                                                # call is judged by compare, which then gets (result, [their plain
                                                # values after the call]); every other argument must be unchanged
    seeded: int | None = None                   # position of a `seed` argument: the same seed must give the same
                                                # result and seed + 1 another one (each case is run three times)
    watch: tuple[str, Callable] | None = None   # (dotted path of a given function, args -> int): the sum over the
                                                # student's calls of it is judged too, compare gets (result, sum)
    remark: Callable[[tuple, Any], str] | None = None  # (args, plain result) -> what the grader's feedback adds
                                                # under "✓ passed" (e.g. a sample of a trained model's text)

    @property
    def check_name(self) -> str:
        return f"check_{self.name}"

    def __call__(self, fn: Callable, **params: Any) -> None:
        folder = os.environ.get(GRADING_ENV)
        if folder:
            return self._record(fn, Path(folder), params)
        judged = []
        for args in self.cases(**params):
            try:
                judged.append((args, self.run(fn, args)))
                self.judge_case(*judged[-1])
            except CheckFailed as err:
                raise CheckFailed(f"{err}{self.which_case(args, str(err))}") from None
        print("✓", self.passed)
        for args, plain in judged if self.remark else ():
            print(self.remark(args, plain))

    def run(self, fn: Callable, args: tuple) -> Any:
        """Call the student's function on fresh copies of `args` (twice more with a `seeded` check) and return the
        plain result; fails if an argument that the task does not change in place was changed."""
        results = []
        seeds = [] if self.seeded is None else [args[self.seeded], args[self.seeded] + 1]
        for seed in [None, *seeds]:
            mine = clone(args if seed is None else (*args[:self.seeded], seed, *args[self.seeded + 1:]))
            before = snapshot(mine)
            with counting(self.watch, fn) as counted:
                value = call(fn, self.name, self.reference, args, mine, self.crash_hint, self.forbidden)
            self.unchanged(fn, before, mine)
            results.append(self.plain(value, mine, counted[0] if self.watch else None))
        return results[0] if len(results) == 1 else results

    def unchanged(self, fn: Callable, before: tuple, after: tuple) -> None:
        """Fail, naming the argument, if the call changed one that the task does not change in place."""
        for i, (b, a) in enumerate(zip(before, after)):
            if i not in self.inputs_after and not same_data(b, a):
                arg = _parameter_name(fn, self.reference, i)
                kind = {list: "list", dict: "dict"}.get(type(a), "tensor" if isinstance(a, torch.Tensor) else
                                                         type(a).__name__)
                fail(f"`{self.name}` changed its argument `{arg}`, the caller's {kind}: it must return a new "
                     f"{'value' if kind not in ('list', 'tensor') else kind} and leave its inputs as they were. An "
                     "in-place operation (`x += ...`, `x /= ...`, `x[...] = ...`, `.add_(...)`, `.append(...)` on the "
                     "given list) writes into the caller's object: compute a new one instead (`x = x + ...`, a "
                     "copy of a list with `list(...)`).")

    def judge_case(self, args: tuple, plain: Any) -> None:
        """`compare` on one case's plain result; for a `seeded` check on the first of its three results, then
        fail unless the same seed gave the same result and seed + 1 another one."""
        if self.seeded is None:
            return self.compare(args, plain)
        first, again, other = plain
        self.compare(args, first)
        seed = args[self.seeded]
        if not same_plain(first, again):
            fail(f"`{self.name}` gave two different results for the same seed ({seed}): its randomness does not "
                 "come from its `seed` argument alone. Draw every random number from one "
                 "`torch.Generator().manual_seed(seed)` (pass `generator=` to torch.randint / torch.multinomial / "
                 "torch.randperm), not from torch's "
                 "global generator.")
        if same_plain(first, other):
            fail(f"`{self.name}` gave the same result for seed {seed} and seed {seed + 1}: the `seed` argument is "
                 "ignored. Create the generator with `torch.Generator().manual_seed(seed)`, from the argument.")

    def plain(self, value: Any, args_after: tuple, counted: int | None = None) -> Any:
        """What the student's call produced, as plain data: its value, the arguments in `inputs_after`, and the
        count of `watch`."""
        out = self.output(value, self.name)
        if self.inputs_after:
            out = out, [as_float_array(args_after[i], self.name) for i in self.inputs_after]
        return out if self.watch is None else (out, counted)

    def replain(self, recorded: Any) -> Any:
        """`plain` again, on what the kernel recorded (plain data read back from JSON)."""
        if self.seeded is not None:
            if not isinstance(recorded, list) or len(recorded) != 3:
                raise ValueError("three results expected")
            return [self._replain_one(r) for r in recorded]
        return self._replain_one(recorded)

    def _replain_one(self, recorded: Any) -> Any:
        if self.watch is not None:
            recorded, counted = recorded
            return self._replain_value(recorded), int(counted)
        return self._replain_value(recorded)

    def _replain_value(self, recorded: Any) -> Any:
        if not self.inputs_after:
            return self.output(recorded, self.name)
        value, after = recorded
        return self.output(value, self.name), [as_float_array(a, self.name) for a in after]

    def which_case(self, args: tuple, message: str = "") -> str:
        """A line naming the failing call with its arguments when they are small, unless the message shows it."""
        shown = short_args(args)
        said = [repr(a)[:30] for a in args if isinstance(a, str) and len(a) > 3]
        if f"`{self.name}(" in message or any(r in message for r in said) or len(shown) > 200:
            return ""
        return f"\n(failing case: `{self.name}{shown}`)"

    def _record(self, fn: Callable, folder: Path, params: dict) -> None:
        """Grading mode: run the student's function on the grader's cases and append the plain results."""
        path = folder / "cases" / f"{case_key(self.check_name, params)}.pt"
        if not path.exists():
            print(f"({self.check_name} with {params} is not graded: skipped)")
            return
        results = []
        for args in torch.load(path, weights_only=True):
            try:
                results.append({"ok": to_json(self.run(fn, args))})
            except CheckFailed as err:
                results.append({"failed": str(err)})
        record = {"check": self.check_name, "key": case_key(self.check_name, params), "results": results}
        with open(folder / "records.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        print(f"{self.check_name}: {len(results)} results recorded for grading.")

    def judge(self, params: dict, results: list[dict] | None, cases: list | None = None) -> str | None:
        """Trusted side: None if the recorded results are right, else the first message. `cases`: the ones the
        kernel was given, when the grader kept them (else made again from `params`)."""
        cases = self.cases(**params) if cases is None else cases
        if results is None:
            return f"`{self.name}` was not checked: the test cell did not run to the end (see your notebook)."
        if len(results) != len(cases):
            return f"`{self.name}`: {len(results)} results recorded for {len(cases)} cases."
        try:
            for args, result in zip(cases, results):
                if "failed" in result:
                    return str(result["failed"])[:2000]
                self.judge_case(args, self.replain(result["ok"]))
        except CheckFailed as err:
            return str(err)
        except Exception as err:  # malformed data from the kernel
            return f"`{self.name}` returned something that could not be read: {type(err).__name__}"
        return None


    def remarks(self, params: dict, results: list[dict] | None, cases: list | None = None) -> str:
        """Trusted side, once `judge` passed: what `remark` says of the recorded results ('' without one)."""
        if self.remark is None or not results:
            return ""
        cases = self.cases(**params) if cases is None else cases
        try:
            said = [self.remark(args, self.replain(r["ok"])) for args, r in zip(cases, results)]
        except Exception:  # a remark is a courtesy: it never costs a point or stops the grading
            return ""
        return "\n".join(s for s in said if s)


def diagnosis(fn: Callable) -> Callable:
    """Marks a helper of the checks that computes what a mistake (or the task itself) computes: it runs only where
    the answer may be known. In the grading kernel it is a stub, in the student kit it replays its results on the
    visible cases (llmcourse.grading.student.stubs, replay)."""
    fn.diagnosis = True
    return fn


def register(check: Check) -> Check:
    REGISTRY[check.check_name] = check
    return check


def case_key(check_name: str, params: dict) -> str:
    """A file name for one call of a check with its parameters."""
    blob = json.dumps(params, sort_keys=True, default=repr)
    return f"{check_name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def to_json(value: Any) -> Any:
    """Plain data as JSON-ready values: arrays become nested lists, tuples lists, dict keys strings."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {"__pairs__": [[to_json(k), to_json(v)] for k, v in value.items()]}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def from_json_dict(value: Any) -> Any:
    """Undo `to_json` for dicts (their keys may be tuples)."""
    if isinstance(value, dict) and "__pairs__" in value:
        return {tuple(k) if isinstance(k, list) else k: v for k, v in value["__pairs__"]}
    return value


# --- calling the student's function ------------------------------------------------------------------

def call(fn: Callable, name: str, reference: Callable, args: tuple, mine: tuple | None = None, hint: str = "",
         forbidden: tuple[str, ...] = ()) -> Any:
    """Call the student's function on `mine` (fresh copies of `args` unless given: the caller may want to see what
    the function did to them), turning 'not written yet', the reference, a `forbidden` torch function (dotted
    paths: what the exercise asks the student to write, e.g. torch.nn.functional.scaled_dot_product_attention) and
    crashes into messages."""
    if not callable(fn):
        fail(f"`{name}` should be a function, but it is a {type(fn).__name__}.")
    if uses_reference(fn, reference):
        fail(f"`{name}` calls llmcourse's own reference implementation. Write it yourself: this scores 0.")
    for path in forbidden:  # named in the student's code (e.g. imported under another name)
        if uses_reference(fn, _resolve(path), by_attribute=False):  # attributes: `watching` sees them called
            _fail_forbidden(name, path)
    try:
        with watching(forbidden) as used:
            value = fn(*(clone(args) if mine is None else mine))
        if used:  # called at run time (through torch.nn.functional, a module of torch's, ...)
            _fail_forbidden(name, used[0])
        return value
    except NotImplementedError as err:
        if "yours to write in exercise" in str(err):  # the kit: an earlier exercise's function it calls (chain.py)
            fail(f"`{name}` calls a function of an earlier exercise that the kit does not have yet: {err}")
        fail(f"`{name}` is not written yet: replace `raise NotImplementedError()` with your code.")
    except CheckFailed:
        raise
    except Exception as err:  # the student's code crashed: say where, in their terms
        about_shapes = any(w in str(err) for w in ("shape", "size", "dimension"))
        fail(f"`{name}{short_args(args)}` raised {type(err).__name__}: {err}" + (f"\n{hint}" if hint and about_shapes else ""))


def _fail_forbidden(name: str, path: str) -> None:
    fail(f"`{name}` uses `{path.removesuffix('.forward')}`, which does what this exercise asks you to write. Write it "
         "yourself with plain torch operations: this scores 0.")


def _resolve(path: str) -> Any:
    """The object at a dotted path: 'torch.nn.Linear.forward' -> the function."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


@contextmanager
def watching(paths: tuple[str, ...]) -> Iterator[list[str]]:
    """While active, each function at `paths` (a module's function, a class's method) is replaced by a spy that
    notes its path in the yielded list, then runs the original."""
    used: list[str] = []
    saved = []
    for path in paths:
        owner_path, _, attr = path.rpartition(".")
        owner = _resolve(owner_path)
        original = getattr(owner, attr)

        def spy(*args, _original=original, _path=path, **kwargs):
            used.append(_path)
            return _original(*args, **kwargs)

        setattr(owner, attr, spy)
        saved.append((owner, attr, original))
    try:
        yield used
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


def clone(args: tuple) -> tuple:
    """Fresh (deep) copies, so a function that modifies its inputs cannot change the next case."""
    def copy(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            return a.clone()
        if isinstance(a, list):
            return [copy(v) for v in a]
        if isinstance(a, tuple):
            return tuple(copy(v) for v in a)
        if isinstance(a, dict):
            return {k: copy(v) for k, v in a.items()}
        if isinstance(a, np.ndarray):
            return a.copy()
        return a
    return tuple(copy(a) for a in args)


def snapshot(value: Any) -> Any:
    """The data of an argument, copied, to compare after the call (objects other than tensors, arrays,
    containers, models and plain values are not judged)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v) for v in value) if isinstance(value, list) else tuple(snapshot(v) for v in value)
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, torch.nn.Module):
        return {"__module__": {k: v.detach().clone() for k, v in value.state_dict().items()}}
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    return _NOT_JUDGED


_NOT_JUDGED = object()


def same_data(before: Any, after: Any) -> bool:
    """True if `after` (an argument after the call) holds the data `before` (its snapshot) holds."""
    if before is _NOT_JUDGED:
        return True
    if isinstance(before, dict) and "__module__" in before:
        return isinstance(after, torch.nn.Module) and same_data(before["__module__"], snapshot(after)["__module__"])
    if isinstance(before, torch.Tensor):
        return (isinstance(after, torch.Tensor) and after.shape == before.shape and after.dtype == before.dtype
                and bool(torch.equal(after.detach(), before) or torch.equal(after.detach().isnan(), before.isnan())
                         and torch.equal(after.detach().nan_to_num(), before.nan_to_num())))
    if isinstance(before, np.ndarray):
        return isinstance(after, np.ndarray) and after.shape == before.shape and np.array_equal(after, before,
                                                                                                equal_nan=True)
    if isinstance(before, (list, tuple)):
        return (type(after) is type(before) and len(after) == len(before)
                and all(same_data(b, a) for b, a in zip(before, after)))
    if isinstance(before, dict):
        return isinstance(after, dict) and after.keys() == before.keys() and all(
            same_data(before[k], after[k]) for k in before)
    return type(after) is type(before) and (after == before or after != after and before != before)


def same_plain(a: Any, b: Any) -> bool:
    """True if two plain results are equal (arrays exactly, NaN equal to NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_plain(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_plain(a[k], b[k]) for k in a)
    return a == b


def _parameter_name(fn: Callable, reference: Callable, i: int) -> str:
    """The name of the i-th parameter of the student's function (else of the reference), or 'number i+1'."""
    for f in (fn, reference):
        try:
            params = [p.name for p in inspect.signature(f).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            continue
        if i < len(params):
            return params[i]
    return f"number {i + 1}"


@contextmanager
def counting(watch: tuple[str, Callable] | None, fn: Callable) -> Iterator[list[int]]:
    """While active, every call of the given function at `watch[0]` adds `watch[1](*args)` to the yielded
    count: through its module, and through the names that bind it where `fn` was written (`from ... import
    step` in the notebook)."""
    counted = [0]
    if watch is None:
        yield counted
        return
    path, measure = watch
    owner_path, _, attr = path.rpartition(".")
    owner = _resolve(owner_path)
    original = getattr(owner, attr)

    def spy(*args, **kwargs):
        counted[0] += int(measure(*args, **kwargs))
        return original(*args, **kwargs)

    spy.__wrapped__ = original
    spaces = {id(g): g for g in (getattr(fn, "__globals__", None), vars(sys.modules["__main__"]))
              if isinstance(g, dict)}
    bound = [(ns, name) for ns in spaces.values() for name, value in list(ns.items()) if value is original]
    setattr(owner, attr, spy)
    for ns, name in bound:
        ns[name] = spy
    try:
        yield counted
    finally:
        setattr(owner, attr, original)
        for ns, name in bound:
            ns[name] = original


def uses_reference(fn: Callable, reference: Callable, by_attribute: bool = True) -> bool:
    """True if `fn` is `reference` or reaches it: directly, through a module attribute
    (`tokens.encode`; unless `by_attribute` is False), a closure, or another function of the student's that calls it."""
    name = getattr(reference, "__name__", "")
    seen: set[int] = set()

    def visit(f: Any) -> bool:
        if f is reference or getattr(f, "__wrapped__", None) is reference:
            return True
        if isinstance(f, functools.partial):
            return visit(f.func)
        if not isinstance(f, types.FunctionType) or id(f) in seen:
            return False
        seen.add(id(f))
        codes = [f.__code__] + [c for c in f.__code__.co_consts if isinstance(c, types.CodeType)]
        names = {n for code in codes for n in code.co_names}
        referenced = [f.__globals__[n] for n in names if n in f.__globals__]
        referenced += [cell.cell_contents for cell in (f.__closure__ or ()) if _cell_filled(cell)]
        for obj in referenced:
            if (by_attribute and isinstance(obj, types.ModuleType) and getattr(obj, name, None) is reference
                    and name in names):
                return True
            if visit(obj):
                return True
        return False

    return visit(fn)


def _cell_filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def short_args(args: tuple) -> str:
    def show(a: Any) -> str:
        if isinstance(a, torch.Tensor) and a.numel() <= 8 and not a.is_floating_point():
            return f"tensor({a.tolist()})"
        if isinstance(a, (torch.Tensor, np.ndarray)):
            return f"<{type(a).__name__} of shape {tuple(a.shape)}>"
        if isinstance(a, dict) and any(isinstance(v, torch.Tensor) for v in a.values()):
            return f"<dict of {len(a)} weights>"
        text = repr(a)
        return text if len(text) <= 40 else text[:37] + "..."
    return "(" + ", ".join(show(a) for a in args) + ")"


# --- plain data of the expected type -----------------------------------------------------------------

def as_float_array(value: Any, name: str) -> np.ndarray:
    """Plain float64 numpy array of what the student returned, or a message saying what it is instead."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy().copy()
    if isinstance(value, (np.ndarray, list, tuple, float, int, np.floating)) and not isinstance(value, bool):
        try:
            return np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            pass
    fail(f"`{name}` should return a torch tensor of numbers, but it returned a {type(value).__name__}.")


def as_int_list(value: Any, name: str) -> list[int]:
    """Plain list of Python ints, or a message saying what the student returned instead."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        fail(f"`{name}` should return a list of integer token ids, but it returned {type(value).__name__}: {value!r:.80}")
    return [int(v) for v in value]


def as_pair_list(value: Any, name: str) -> list[tuple[int, int]]:
    """Plain list of (int, int) pairs."""
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, (int, np.integer)) for v in p) for p in value)
    if not ok:
        fail(f"`{name}` should return a list of pairs of token ids like [(101, 32), (256, 116)], "
             f"but it returned {type(value).__name__}: {value!r:.80}")
    return [(int(a), int(b)) for a, b in value]


def as_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        fail(f"`{name}` should return a str, but it returned a {type(value).__name__}: {value!r:.80}")
    return str(value)


def as_pair_counts(value: Any, name: str) -> dict[tuple[int, int], int]:
    value = from_json_dict(value)
    if not isinstance(value, dict):
        fail(f"`{name}` should return a dict mapping pairs to counts, but it returned a {type(value).__name__}.")
    try:
        return {(int(a), int(b)): int(n) for (a, b), n in value.items()}
    except (TypeError, ValueError):
        fail(f"`{name}` should map pairs of ids (a, b) to counts, e.g. {{(1, 2): 2}}; got {value!r:.80}")


def compare_arrays(got: np.ndarray, want: np.ndarray, name: str, mistakes: dict[str, np.ndarray] | None = None,
                   what: str = "") -> None:
    """Shape, then NaN, then values within ATOL/RTOL; a wrong value is matched against known mistakes."""
    where = f" {what}" if what else ""
    if got.shape != want.shape:
        fail(f"`{name}`{where} returned shape {got.shape}, expected {want.shape}.")
    if np.isnan(got).any() and not np.isnan(want).any():
        fail(f"`{name}`{where} returned NaN values (a division by zero? the log of a negative number?).")
    if np.allclose(got, want, atol=ATOL, rtol=RTOL):
        return
    for message, wrong in (mistakes or {}).items():
        if wrong.shape == got.shape and np.allclose(got, wrong, atol=ATOL, rtol=RTOL):
            fail(f"`{name}`{where}: {message}")
    index = np.unravel_index(np.argmax(np.abs(got - want)), got.shape)
    fail(f"`{name}`{where} is wrong at index {tuple(int(i) for i in index)}: got {got[index]:.6g}, "
         f"expected {want[index]:.6g} (tolerance {ATOL} absolute + {RTOL} relative).")
