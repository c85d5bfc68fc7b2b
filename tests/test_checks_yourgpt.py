"""The checks of 08_your_gpt's training part: AdamW, the batched GPT, and the judge of the trained weights.

What every check must do (pass the solution, refuse the reference, name the planted mistakes) is tested for all
exercises in test_checks_all.py; the trained model's round trip through nbgrader (the solution passes, a model
trained without the causal mask and a loss measured on the training text lose the points) in test_exercises.py.
"""
from __future__ import annotations

import math

import pytest
import torch

from llmcourse import checks, data, gpt, train, yourgpt
from llmcourse.checks import yourgpt as cy
from llmcourse.checks.core import CheckFailed
from llmcourse.grading import course


def test_adamw_step_is_torchs_adamw():
    """One step of the reference equals torch.optim.AdamW's (decoupled decay), from a warm state too."""
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(4, 3, generator=gen)
    param = p0.clone().requires_grad_()
    opt = torch.optim.AdamW([param], lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.3)
    ours, m, v = p0.clone(), torch.zeros(4, 3), torch.zeros(4, 3)
    for t in (1, 2, 3):
        grad = torch.randn(4, 3, generator=gen)
        param.grad = grad.clone()
        opt.step()
        ours, m, v = yourgpt.adamw_step(ours, grad, m, v, t, 0.05, 0.3, 0.9, 0.99, 1e-8)
    assert torch.allclose(ours, param.detach(), atol=1e-6)


def test_adamw_mistakes_are_named():
    from llmcourse.train import adam_step

    def l2(p, g, m, v, t, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
        return adam_step(p, g + wd * p, m, v, t, lr, b1, b2, eps)

    def unscaled(p, g, m, v, t, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
        return adam_step(p * (1 - wd), g, m, v, t, lr, b1, b2, eps)
    with pytest.raises(CheckFailed, match="Adam with L2 regularisation"):
        checks.check_adamw_step(l2)
    with pytest.raises(CheckFailed, match="not scaled by the learning rate"):
        checks.check_adamw_step(unscaled)


def _loop_gpt(params, tokens, n_heads):
    """A correct alternative: one sequence at a time through the course's block, LayerNorm by hand."""
    out = []
    for seq in tokens:
        x = params["tok"][seq] + params["pos"][: len(seq)]
        for p in params["blocks"]:
            x = gpt.block_forward(x, p, n_heads)
        mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        out.append(((x - mean) / (var + 1e-5).sqrt() * params["ln_g"] + params["ln_b"]) @ params["tok"].T)
    return torch.stack(out)


def test_gpt_logits_alternative_passes_and_mistakes_are_named(capsys):
    checks.check_gpt_logits(_loop_gpt)
    checks.check_gpt_logits(_loop_gpt, seed=9, shapes=((3, 4, 15, 12, 3, 3), (2, 9, 7, 8, 1, 1)))
    assert "✓" in capsys.readouterr().out

    def no_positions(params, tokens, n_heads):
        return _loop_gpt({**params, "pos": torch.zeros_like(params["pos"])}, tokens, n_heads)

    def no_final_norm(params, tokens, n_heads):
        x = params["tok"][tokens] + params["pos"][: tokens.shape[1]]
        for p in params["blocks"]:
            x = torch.func.vmap(gpt.block_forward, in_dims=(0, None, None))(x, p, n_heads)
        return x @ params["tok"].T
    with pytest.raises(CheckFailed, match="position embeddings are missing"):
        checks.check_gpt_logits(no_positions)
    with pytest.raises(CheckFailed, match="final LayerNorm is missing"):
        checks.check_gpt_logits(no_final_norm)


def _judge(value, steps=yourgpt.STEPS) -> str | None:
    """The trusted side's verdict on what a kernel would record for `train_gpt` returning `value`."""
    check = checks.REGISTRY["check_train_gpt"]
    try:                                     # in the kernel, as Check.run would record it
        recorded = {"ok": checks.core.to_json(check.output(value, "train_gpt"))}
    except CheckFailed as err:
        recorded = {"failed": str(err)}
    return check.judge({"steps": steps}, [recorded], [(steps, 0)])


def test_trained_gpt_judge_refuses_malformed_and_untrained_models():
    params = yourgpt.init_gpt(83, 32, 16, 1, 0)
    assert "(params, val_loss)" in _judge(params)
    assert "validation loss (a float)" in _judge((params, "low"))
    assert "missing: blocks" in _judge(({k: v for k, v in params.items() if k != "blocks"}, 1.0))
    small = yourgpt.init_gpt(83, 8, 16, 1, 0)
    assert "position embedding has shape (8, 16)" in _judge((small, 1.0))
    with torch.no_grad():
        broken = yourgpt.init_gpt(83, 32, 16, 1, 0)
        broken["blocks"][0]["W1"][0, 0] = float("nan")
    assert "NaN" in _judge((broken, 1.0))
    message = _judge((params, 4.4))          # untrained: the uniform guess's loss, about ln 83
    assert f"bar is {cy.VAL_BAR}" in message and f"costs {math.log(83):.2f}" in message


@pytest.fixture(scope="module")
def run():
    """The course's own run of the exercise (the book's, cached: about 40 s of one core the first time)."""
    return data.cached(yourgpt.trained, steps=yourgpt.STEPS, seed=0)


def test_trained_gpt_passes_the_bar_and_the_report_must_be_the_held_out_loss(run):
    params, val = run["params"], run["val_loss"]
    assert val <= cy.VAL_BAR - 0.03, f"the solution's margin is thin: {val:.3f}"
    assert _judge((params, val)) is None
    assert _judge((params, torch.tensor(val))) is None
    chars = train.char_data(train.shakespeare_plays())
    on_train = yourgpt.window_loss(lambda t: yourgpt.gpt_logits(params, t, 4), chars.train, 32)
    assert abs(on_train - val) > 4 * cy.REPORT_TOL        # the two texts' windows are told apart
    assert "is your model's loss on the training text" in _judge((params, on_train))
    assert "is not your model's" in _judge((params, val - 0.2))
    remark = cy._remark_trained((yourgpt.STEPS, 0), checks.REGISTRY["check_train_gpt"].output((params, val), "x"))
    assert f"{val:.3f} nats per character" in remark and len(remark.splitlines()) > 3


def test_exercise_08_has_its_own_cell_limit():
    assert course.cell_timeout_for("08_your_gpt") > course.CELL_TIMEOUT == course.cell_timeout_for("06_training")
