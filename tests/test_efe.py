"""The EFE terms against a slow loop-based reference, and their documented identities."""

import math

import pytest
import torch

from efe_ray import efe


def _ref_terms(logits, target, eps):
    """Per-cell (risk, ambiguity, forward_kl) with explicit Python loops."""
    b_, h_, w_, c_ = logits.shape
    out = torch.zeros(3, b_, h_, w_, dtype=torch.float64)
    for b in range(b_):
        for i in range(h_):
            for j in range(w_):
                z = [float(v) for v in logits[b, i, j]]
                m = max(z)
                norm = math.log(sum(math.exp(v - m) for v in z)) + m
                q = [math.exp(v - norm) for v in z]
                p = [(1 - eps) * (1.0 if k == int(target[b, i, j]) else 0.0) + eps / c_ for k in range(c_)]
                risk = sum(q[k] * (math.log(q[k]) - math.log(p[k])) for k in range(c_))
                amb = -sum(q[k] * math.log(q[k]) for k in range(c_))
                fkl = sum(p[k] * (math.log(p[k]) - math.log(q[k])) for k in range(c_))
                out[:, b, i, j] = torch.tensor([risk, amb, fkl])
    return out


def _ref_loss(logits, target, loss_mask, target_mask, eps, objective):
    risk, amb, fkl = _ref_terms(logits, target, eps)
    per_cell = risk + amb + (fkl if objective == "forward_kl+efe" else 0)
    total = 0.0
    for b in range(logits.shape[0]):
        cells = [(i, j) for i in range(logits.shape[1]) for j in range(logits.shape[2]) if loss_mask[b, i, j] > 0]
        tcells = [(i, j) for i in range(logits.shape[1]) for j in range(logits.shape[2]) if target_mask[b, i, j] > 0]
        wrong = sum(int(logits[b, i, j].argmax()) != int(target[b, i, j]) for i, j in tcells) / len(tcells)
        mean = sum(float(per_cell[b, i, j]) for i, j in cells) / len(cells)
        total += (0.5 + 0.5 * wrong) * mean
    return total / logits.shape[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_terms_match_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 4, 11, generator=g) * 3
    target = torch.randint(0, 11, (2, 3, 4), generator=g)
    log_q = torch.log_softmax(logits, -1)
    log_p = efe.log_preferences(target, 11, 0.1)
    ref = _ref_terms(logits, target, 0.1)
    torch.testing.assert_close(efe.risk(log_q, log_p).double(), ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(efe.ambiguity(log_q).double(), ref[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(efe.forward_kl(log_q, log_p).double(), ref[2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("objective", ["forward_kl+efe", "efe"])
def test_loss_matches_loop_reference(objective):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 4, 11, generator=g) * 2
    target = torch.randint(0, 11, (3, 4, 4), generator=g)
    loss_mask = (torch.rand(3, 4, 4, generator=g) > 0.3).float()
    loss_mask[:, 0, 0] = 1
    target_mask = torch.zeros(3, 4, 4)
    target_mask[:, :2, :3] = 1
    terms = efe.efe_loss(logits, target, loss_mask, target_mask, eps=0.1, objective=objective)
    ref = _ref_loss(logits, target, loss_mask, target_mask, 0.1, objective)
    assert float(terms.loss) == pytest.approx(ref, rel=1e-5)


def test_efe_equals_cross_entropy_of_q_against_preferences():
    """risk + ambiguity = −Σ q ln P̃ (the identity in the module docstring)."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 11, generator=g)
    target = torch.randint(0, 11, (5,), generator=g)
    log_q = torch.log_softmax(logits, -1)
    log_p = efe.log_preferences(target, 11, 0.2)
    torch.testing.assert_close(efe.risk(log_q, log_p) + efe.ambiguity(log_q), -(log_q.exp() * log_p).sum(-1))


def test_efe_gradient_saturates_where_forward_kl_does_not():
    """Confidently wrong cells: EFE's gradient vanishes, the forward KL's does not."""
    logits = torch.zeros(1, 1, 1, 11)
    logits[..., 3] = 30.0  # q puts ~all mass on class 3
    target = torch.zeros(1, 1, 1, dtype=torch.long)  # the answer is class 0
    ones = torch.ones(1, 1, 1)
    grads = {}
    for objective in ("efe", "forward_kl+efe"):
        x = logits.clone().requires_grad_(True)
        efe.efe_loss(x, target, ones, ones, eps=0.1, objective=objective).loss.backward()
        grads[objective] = float(x.grad.norm())
    assert grads["efe"] < 1e-6
    assert grads["forward_kl+efe"] > 0.5


def test_hard_cell_weight_and_mask_ratio():
    assert torch.equal(efe.hard_cell_weight(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0.5, 0.75, 1.0]))
    logits = torch.full((1, 2, 2, 11), -5.0)
    logits[0, 0, 0, 1] = logits[0, 0, 1, 2] = logits[0, 1, 0, 3] = logits[0, 1, 1, 9] = 5.0
    target = torch.tensor([[[1, 2], [3, 4]]])
    terms = efe.efe_loss(logits, target, torch.ones(1, 2, 2), torch.ones(1, 2, 2))
    assert float(terms.mask_ratio) == pytest.approx(0.25)


def test_targets_must_be_long():
    with pytest.raises(TypeError, match="long"):
        efe.log_preferences(torch.zeros(2, 2, dtype=torch.int32), 11, 0.1)
    with pytest.raises(TypeError, match="long"):
        efe.efe_loss(torch.zeros(1, 2, 2, 11), torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.ones(1, 2, 2))
