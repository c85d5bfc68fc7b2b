"""Nothing that students can import computes a graded function's answer (issue 29 part 2, issue 27 item 3).

Two copies of llmcourse reach students: the student kit's wheel, and the package the grading kernel imports. In
both, the graded references are stubs; so must be every helper of the checks that computes what a graded
function (or a mistake's switch of it) computes: in the kernel every function of the check modules except
what the kernel runs (the student's value turned into plain data), in the kit the `@diagnosis` helpers, which
replay their results on the visible cases. Tested two ways:

- no line of a solution block appears in the kit's package (generic idioms aside), and none of the lines the
  old checks shared with the solutions appears in the kit's checks;
- every function of the package (kit's and kernel's), called with a graded function's visible-case arguments
  where its signature takes them, returns something other than the reference's answer (stubs raise).
The package is built here without the book (`kit.build_package`), which is what the wheel holds.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from conftest import REPO
from llmcourse import checks, grading
from llmcourse.grading.batch import judge
from llmcourse.grading.student import kit as kitmod, stubs

ASSIGNMENTS = grading.assignments(REPO)
# idioms that a solution shares with any helper of the course (never an answer alone)
GENERIC = {"loss.backward()", "model.zero_grad()", "optimizer.zero_grad()", "with torch.no_grad():",
           "losses.append(loss.item())", "gen = torch.Generator().manual_seed(seed)", "for _ in range(steps):",
           "if mask is not None:", "batch, seq, d_model = x.shape", "for p in model.parameters():",
           "out, weights = scaled_dot_product_attention(q, k, v, mask)", "for _ in range(n_new):",
           "if top_k is not None:", "if top_p is not None:", "seq, d = x.shape", "return counts",
           "tokens = list(prompt)"}


@pytest.fixture(scope="module")
def kit_site(kit_package) -> Path:
    return kit_package / "site"


@pytest.fixture(scope="module")
def kernel_site(tmp_path_factory) -> Path:
    """The grading kernel's package for 05_gpt (the checks' stubbing does not depend on the assignment)."""
    site = tmp_path_factory.mktemp("kernel-site")
    nb = nbformat.read(REPO / "solutions" / "05_gpt" / "05_gpt.ipynb", as_version=4)
    stubs.build_stubbed_package(site, nb, judge.test_cells(nb))
    return site


def solution_lines() -> set[str]:
    lines = set()
    for assignment in ASSIGNMENTS:
        nb = nbformat.read(REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
        for cell in nb.cells:
            for block in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S):
                lines |= {line.strip() for line in block.splitlines()
                          if len(line.strip()) > 12 and not line.strip().startswith("#")}
    return lines - GENERIC


def test_no_solution_line_in_the_kits_package(kit_site):
    lines = solution_lines()
    assert len(lines) > 50
    leaks = []
    for path in sorted((kit_site / "llmcourse").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        leaks += [f"{line!r} in {path.relative_to(kit_site)}" for line in lines if line in text]
    assert not leaks, "solution lines in the kit:\n" + "\n".join(leaks)


def test_the_diagnoses_are_stubs_in_the_kit_and_in_the_kernel(kit_site, kernel_site):
    for site, marker in ((kit_site, "_llmcourse_stub_call"), (kernel_site, "NotImplementedError")):
        text = (site / "llmcourse" / "checks" / "gpt.py").read_text(encoding="utf-8")
        for name in ("_block_variant", "_filtered", "_greedy_variant", "_count_variant", "_dist_mistakes"):
            body = text[text.index(f"def {name}("):].split("\ndef ", 1)[0]
            assert marker in body and "torch.sqrt" not in body and "topk" not in body, (site, name)
    tokens = (kit_site / "llmcourse" / "checks" / "tokens.py").read_text(encoding="utf-8")
    assert "counts[pair] = counts.get(pair, 0) + n" not in tokens and "_train_variant" in tokens
    kernel = (kernel_site / "llmcourse" / "checks" / "gpt.py").read_text(encoding="utf-8")
    compare = kernel.split("def _compare_block", 1)[1].split("\ncheck_block_forward", 1)[0]
    assert "NotImplementedError" in compare and "mistakes" not in compare      # the judge compares, not the kernel


def visible_cases(only: str | None = None) -> list[tuple[str, tuple, object]]:
    """(check name, args, the reference's answer) of every visible check call of every exercise (or of `only`)."""
    out = []
    for assignment, path in kitmod.released_notebooks(REPO).items():
        if only and assignment != only:
            continue
        for _, name, params in kitmod.visible_calls(nbformat.read(path, as_version=4)):
            check = checks.REGISTRY[name]
            if name in ("check_train", "check_train_bigram", "check_find_memories_in_model",
                        "check_find_name_mover_in_model"):
                continue            # outcomes of training or of a trained model: no single answer to look up
            for args in check.cases(**params):
                try:
                    answer = check.reference(*checks.core.clone(args))
                except TypeError:   # the exercise's function takes other arguments than the reference
                    continue
                out.append((name, args, answer))
    return out


PROBE = r'''
import inspect, importlib, pkgutil, signal, sys, os, time, types
import numpy as np, torch
sys.path.insert(0, SITE)
import llmcourse
assert llmcourse.__file__.startswith(SITE), llmcourse.__file__
# what a kit's stub imports when first called: imported now, not under the time limit
for name in ("llmcourse.grading.student.chain", "llmcourse.grading.student.replay"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
cases = torch.load(CASES, weights_only=False)

def same(a, b):
    if isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=1e-5)
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.shape == b.shape and np.allclose(a, b, atol=1e-5)
    if isinstance(b, (list, tuple)) and b and not isinstance(b, str):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        return isinstance(a, (int, float)) and not isinstance(a, bool) and abs(a - b) <= 1e-6 * max(1, abs(b))
    if isinstance(b, dict) and b:
        return isinstance(a, dict) and dict(a) == dict(b)
    return False

def clone(args):
    return tuple(a.clone() if isinstance(a, torch.Tensor) else [*a] if isinstance(a, list) else
                 {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in a.items()} if isinstance(a, dict)
                 else a for a in args)

def alarm(*_):
    raise TimeoutError
# a training run or a pass of SmolLM2 (too slow to probe, as the last runs found): a quarter of a second to show
# otherwise, instead of 2 s (28 s of CPU in all)
KNOWN_SLOW = ("llmcourse.probes.smollm2_", "llmcourse.probes.answer_steps", "llmcourse.sweep.run_",
              "llmcourse.train.train_shakespeare", "llmcourse.llama.hf_logits", "llmcourse.llama.smollm2_logits",
              "llmcourse.checks.yourgpt._smollm2_cases", "llmcourse.checks.gpt._generate_cases")
signal.signal(signal.SIGPROF, alarm)  # a limit on this process's CPU time: the same on a busy machine
functions = []
for info in pkgutil.walk_packages(llmcourse.__path__, "llmcourse."):
    if info.name.startswith(("llmcourse.grading", "llmcourse.cli")):
        continue
    try:
        module = importlib.import_module(info.name)
    except Exception:
        continue
    for name, fn in vars(module).items():
        if isinstance(fn, types.FunctionType) and fn.__module__ == info.name:
            functions.append((info.name, name, fn))
found = []
os.chdir(SCRATCH)
slow, spent = set(), {}
for check, args, answer in cases:
    for module, name, fn in functions:
        if (module, name) in slow:
            continue
        try:
            inspect.signature(fn).bind(*args)
        except (TypeError, ValueError):
            continue
        before = time.process_time()
        try:
            signal.setitimer(signal.ITIMER_PROF, 0.25 if f"{module}.{name}".startswith(KNOWN_SLOW) else 2)
            try:
                got = fn(*clone(args))
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
                spent[(module, name)] = spent.get((module, name), 0) + time.process_time() - before
        except TimeoutError:
            slow.add((module, name))      # a training run or a model's load: no lookup of an answer
            continue
        except BaseException:
            continue
        finally:
            if spent[(module, name)] > 3:  # a run (a sweep of trainings) on every case: probed on the first ones
                slow.add((module, name))
        if same(got, answer):
            found.append(f"{module}.{name} answers {check}")
# written to a file opened now: a probed function given small ints may have closed fd 1 or 2
with open(RESULT, "w") as out:
    print(len(slow), "functions too slow to probe:", sorted(slow), file=out)
    print(len(functions), "functions", file=out)
    busiest = sorted(spent.items(), key=lambda kv: -kv[1])[:12]
    print("most CPU time:", ", ".join(f"{m}.{n} {t:.1f} s" for (m, n), t in busiest), file=out)
    print("\n".join(sorted(set(found))) or "none", file=out)
'''


@pytest.mark.parametrize("which", ["kit", "kernel"])
def test_no_function_returns_a_graded_answer(which, kit_site, kernel_site, tmp_path):
    site = kit_site if which == "kit" else kernel_site
    # the kernel's package is 05_gpt's: there the references stand in for other exercises' functions (grading
    # is per notebook), so only 05's own graded functions must be stubs
    cases = visible_cases() if which == "kit" else visible_cases("05_gpt")
    assert len(cases) > (40 if which == "kit" else 5)
    torch.save(cases, tmp_path / "cases.pt")
    (tmp_path / "scratch").mkdir()
    code = (f"SITE, CASES, SCRATCH = {str(site)!r}, {str(tmp_path / 'cases.pt')!r}, {str(tmp_path / 'scratch')!r}\n"
            f"RESULT = {str(tmp_path / 'result.txt')!r}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LLMCOURSE_GRADING")}
    result = subprocess.run([sys.executable, "-c", code + PROBE], capture_output=True, text=True, env=env,
                            timeout=1200, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = (tmp_path / "result.txt").read_text()
    print(found)  # pytest -s: which functions the probe spent its time on
    assert found.strip().endswith("none"), f"{which}: helpers that compute answers:\n{found}"
