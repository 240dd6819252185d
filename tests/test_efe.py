"""efe_ray/efe.py: each term against a slow loop-based reference, the identities of its docstring,
and the loss."""

import math

import pytest
import torch

from efe_ray import efe


def _ref_terms(logits, target, eps):
    """Per-cell (KL[q‖P̃], H[q], H[q, P̃], KL[P̃‖q]) with explicit Python loops."""
    b_, h_, w_, c_ = logits.shape
    out = torch.zeros(4, b_, h_, w_, dtype=torch.float64)
    for b in range(b_):
        for i in range(h_):
            for j in range(w_):
                z = [float(v) for v in logits[b, i, j]]
                m = max(z)
                norm = math.log(sum(math.exp(v - m) for v in z)) + m
                q = [math.exp(v - norm) for v in z]
                p = [(1 - eps) * (1.0 if k == int(target[b, i, j]) else 0.0) + eps / c_ for k in range(c_)]
                kl_qp = sum(q[k] * (math.log(q[k]) - math.log(p[k])) for k in range(c_))
                ent = -sum(q[k] * math.log(q[k]) for k in range(c_))
                ce = -sum(q[k] * math.log(p[k]) for k in range(c_))
                kl_pq = sum(p[k] * (math.log(p[k]) - math.log(q[k])) for k in range(c_))
                out[:, b, i, j] = torch.tensor([kl_qp, ent, ce, kl_pq])
    return out


def _ref_loss(logits, target, loss_mask, target_mask, eps, objective):
    _, _, ce, kl_pq = _ref_terms(logits, target, eps)
    per_cell = ce + (kl_pq if objective == "forward_kl+efe" else 0)
    total = 0.0
    for b in range(logits.shape[0]):
        cells = [(i, j) for i in range(logits.shape[1]) for j in range(logits.shape[2]) if loss_mask[b, i, j] > 0]
        tcells = [(i, j) for i in range(logits.shape[1]) for j in range(logits.shape[2]) if target_mask[b, i, j] > 0]
        wrong = sum(int(logits[b, i, j].argmax()) != int(target[b, i, j]) for i, j in tcells) / len(tcells)
        mean = sum(float(per_cell[b, i, j]) for i, j in cells) / len(cells)
        total += (0.5 + 0.5 * wrong) * mean
    return total / logits.shape[0]


def _inputs(seed, shape=(2, 3, 4), eps=0.1):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, 11, generator=g) * 3
    target = torch.randint(0, 11, shape, generator=g)
    return logits, target, torch.log_softmax(logits, -1), efe.log_preferences(target, 11, eps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_terms_match_loop_reference(seed):
    logits, target, log_q, log_p = _inputs(seed)
    ref = _ref_terms(logits, target, 0.1)
    for got, want in zip((efe.kl_divergence(log_q, log_p), efe.entropy(log_q), efe.cross_entropy(log_q, log_p),
                          efe.kl_divergence(log_p, log_q)), ref):
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


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


def test_cross_entropy_is_kl_plus_entropy():
    """H[q, P̃] = KL[q ‖ P̃] + H[q] (the first identity of the module docstring)."""
    _, _, log_q, log_p = _inputs(4, shape=(5,), eps=0.2)
    torch.testing.assert_close(efe.cross_entropy(log_q, log_p), efe.kl_divergence(log_q, log_p) + efe.entropy(log_q))


def test_expected_free_energy_with_an_identity_likelihood_is_the_risk():
    """Active inference's G = KL[q(o) ‖ P̃(o)] + Σ_s q(s) H[P(o|s)], by loops over an explicit
    likelihood matrix: with the per-cell classifier's identity likelihood the ambiguity is 0 and G
    is the risk KL[q ‖ P̃], not the cross-entropy the "efe" objective minimises."""
    _, _, log_q, log_p = _inputs(5, shape=(6,))
    likelihood = torch.eye(11, dtype=torch.float64)  # P(o|s): the outcome is the state
    for lq, lp in zip(log_q.double(), log_p.double()):
        q_states = lq.exp()
        q_outcomes = likelihood @ q_states
        risk = float((q_outcomes * (q_outcomes.log() - lp)).sum())
        ambiguity = sum(float(q_states[s]) * -sum(float(a) * math.log(float(a)) for a in likelihood[:, s] if a > 0)
                        for s in range(11))
        assert ambiguity == 0.0
        assert risk + ambiguity == pytest.approx(float(efe.kl_divergence(lq, lp)), rel=1e-9)
        assert risk + ambiguity < float(efe.cross_entropy(lq, lp))  # by H[q] > 0


def test_cross_entropy_gradient_saturates_where_forward_kl_does_not():
    """Confidently wrong cells: the "efe" objective's gradient vanishes, the forward KL's does not."""
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


def test_reported_terms_are_the_means_of_the_per_cell_terms():
    logits, target, log_q, log_p = _inputs(6)
    ones = torch.ones(2, 3, 4)
    terms = efe.efe_loss(logits, target, ones, ones, eps=0.1)
    for name, per_cell in (("cross_entropy", efe.cross_entropy(log_q, log_p)), ("risk", efe.kl_divergence(log_q, log_p)),
                           ("entropy", efe.entropy(log_q)), ("forward_kl", efe.kl_divergence(log_p, log_q))):
        torch.testing.assert_close(getattr(terms, name), per_cell.mean(), msg=name)


def test_hard_cell_weight_mask_ratio_and_canvas_accuracy():
    assert torch.equal(efe.hard_cell_weight(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0.5, 0.75, 1.0]))
    logits = torch.full((1, 2, 2, 11), -5.0)
    logits[0, 0, 0, 1] = logits[0, 0, 1, 2] = logits[0, 1, 0, 3] = logits[0, 1, 1, 9] = 5.0
    target = torch.tensor([[[1, 2], [3, 4]]])
    terms = efe.efe_loss(logits, target, torch.ones(1, 2, 2), torch.ones(1, 2, 2))
    assert float(terms.mask_ratio) == pytest.approx(0.25)
    assert float(efe.canvas_cell_accuracy(logits, target, torch.ones(1, 2, 2))) == pytest.approx(0.75)
    only_wrong = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    assert float(efe.canvas_cell_accuracy(logits, target, only_wrong)) == 0.0


def test_targets_must_be_long():
    with pytest.raises(TypeError, match="long"):
        efe.log_preferences(torch.zeros(2, 2, dtype=torch.int32), 11, 0.1)
    with pytest.raises(TypeError, match="long"):
        efe.efe_loss(torch.zeros(1, 2, 2, 11), torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.ones(1, 2, 2))
