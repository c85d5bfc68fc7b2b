"""Typical mistakes in exercise 06_training."""

ADAM = '''
def adam_step(param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v
'''

PLANTED = {
    "ce_without_max": dict(
        cell="cross_entropy",
        source='''
def cross_entropy(logits, targets):
    log_probs = (logits.exp() / logits.exp().sum(dim=-1, keepdim=True)).log()
    return -log_probs[torch.arange(len(targets)), targets].mean()
''',
        fails=["test_cross_entropy", "test_loss_hidden"],
        keeps=["test_linear_softmax_backward", "test_sgd_step", "test_adam_step", "test_train_bigram"],
        message="Subtract each row's maximum"),
    "backward_not_averaged": dict(
        cell="linear_softmax_backward",
        source='''
def linear_softmax_backward(x, W, b, targets):
    probs = torch.softmax(x @ W + b, dim=-1)
    probs[torch.arange(len(targets)), targets] -= 1
    return probs @ W.T, x.T @ probs, probs.sum(dim=0)
''',
        fails=["test_linear_softmax_backward", "test_loss_hidden"],
        keeps=["test_cross_entropy", "test_sgd_step", "test_adam_step", "test_train_bigram"],
        message="not averaged over the batch"),
    "sgd_sign": dict(
        cell="sgd_step",
        source='''
def sgd_step(param, grad, lr):
    return param + lr * grad
''',
        fails=["test_sgd_step", "test_step_hidden", "test_train_bigram", "test_train_hidden"],
        keeps=["test_cross_entropy", "test_linear_softmax_backward", "test_adam_step"],
        message="learning rate sign"),
    "adam_no_bias_correction": dict(
        cell="adam_step",
        source='''
def adam_step(param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    return param - lr * m / (v.sqrt() + eps), m, v
''',
        fails=["test_adam_step", "test_step_hidden"],
        keeps=["test_cross_entropy", "test_sgd_step", "test_train_bigram"],
        message="bias correction is missing"),
    "train_without_zero_grad": dict(
        cell="train_bigram",
        source='''
def train_bigram(tokens, vocab_size, steps, lr, batch_size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = Bigram(vocab_size)
    losses = []
    for _ in range(steps):
        i = torch.randint(0, len(tokens) - 1, (batch_size,), generator=gen)
        loss = cross_entropy(model(tokens[i]), tokens[i + 1])
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(sgd_step(p, p.grad, lr))
        losses.append(loss.item())
    return model, losses
''',
        fails=["test_train_bigram", "test_train_hidden"],
        keeps=["test_cross_entropy", "test_linear_softmax_backward", "test_sgd_step", "test_adam_step"],
        message="gradients accumulate"),
    "ce_wraps_reference": dict(
        cell="cross_entropy",
        source='''
from llmcourse import train as T

def cross_entropy(logits, targets):
    return T.cross_entropy(logits, targets)
''',
        fails=["test_cross_entropy", "test_loss_hidden"],
        keeps=["test_sgd_step", "test_adam_step"],
        message="calls llmcourse's own reference implementation"),
    # issue 29: wrong by the task's own text
    "ce_one_batch_maximum": dict(
        cell="cross_entropy",
        source='''
def cross_entropy(logits, targets):
    shifted = logits - logits.max()
    log_probs = shifted - shifted.exp().sum(dim=-1, keepdim=True).log()
    return -log_probs[torch.arange(len(targets)), targets].mean()
''',
        fails=["test_cross_entropy", "test_loss_hidden"],
        keeps=["test_linear_softmax_backward", "test_sgd_step", "test_adam_step"],
        message="one maximum for the whole batch"),
    "ce_changes_logits": dict(
        cell="cross_entropy",
        source='''
def cross_entropy(logits, targets):
    logits -= logits.max(dim=-1, keepdim=True).values
    log_probs = logits - logits.exp().sum(dim=-1, keepdim=True).log()
    return -log_probs[torch.arange(len(targets)), targets].mean()
''',
        fails=["test_cross_entropy", "test_loss_hidden"],
        keeps=["test_linear_softmax_backward", "test_sgd_step", "test_adam_step"],
        message="changed its argument `logits`"),
    "sgd_in_place": dict(
        cell="sgd_step",
        source='''
def sgd_step(param, grad, lr):
    param -= lr * grad
    return param
''',
        fails=["test_sgd_step", "test_step_hidden"],
        keeps=["test_cross_entropy", "test_linear_softmax_backward", "test_adam_step", "test_train_bigram"],
        message="changed its argument `param`"),
    "adam_eps_inside_sqrt": dict(
        cell="adam_step",
        source=ADAM.replace("(v_hat.sqrt() + eps)", "(v_hat + eps).sqrt()"),
        fails=["test_adam_step", "test_step_hidden"],
        keeps=["test_cross_entropy", "test_sgd_step", "test_train_bigram"],
        message="epsilon is inside the square root"),
    "adam_step_count_off_by_one": dict(
        cell="adam_step",
        source=ADAM.replace("beta1 ** t)", "beta1 ** (t + 1))").replace("beta2 ** t)", "beta2 ** (t + 1))"),
        fails=["test_adam_step", "test_step_hidden"],
        keeps=["test_cross_entropy", "test_sgd_step", "test_train_bigram"],
        message="step count is off by one"),
    "adam_returns_corrected_moments": dict(
        cell="adam_step",
        source=ADAM.replace("return param - lr * m_hat / (v_hat.sqrt() + eps), m, v",
                            "return param - lr * m_hat / (v_hat.sqrt() + eps), m_hat, v_hat"),
        fails=["test_adam_step", "test_step_hidden"],
        keeps=["test_cross_entropy", "test_sgd_step", "test_train_bigram"],
        message="bias-corrected moments are returned"),
    "train_ignores_seed": dict(
        cell="train_bigram",
        source='''
def train_bigram(tokens, vocab_size, steps, lr, batch_size, seed=0):
    gen = torch.Generator().manual_seed(0)
    model = Bigram(vocab_size)
    losses = []
    for _ in range(steps):
        i = torch.randint(0, len(tokens) - 1, (batch_size,), generator=gen)
        loss = cross_entropy(model(tokens[i]), tokens[i + 1])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(sgd_step(p, p.grad, lr))
        losses.append(loss.item())
    return model, losses
''',
        fails=["test_train_bigram", "test_train_hidden"],
        keeps=["test_cross_entropy", "test_linear_softmax_backward", "test_sgd_step", "test_adam_step"],
        message="the `seed` argument is ignored"),
}
