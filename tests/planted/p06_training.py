"""Typical mistakes in exercise 06_training."""

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
}
