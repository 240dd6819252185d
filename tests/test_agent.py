"""The grid agent and its canvas (efe_ray/models/agent.py): round trips, grids too big for it, output
shapes, smaller canvases, and stacked copies for batched adaptation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.models.agent import OUTSIDE, GridAgent, from_canvas, to_canvas


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (6, 6), (6, 1), (1, 6), (2, 4)])
def test_canvas_round_trip(shape):
    grid = np.random.default_rng(sum(shape)).integers(0, 10, size=shape)
    canvas = to_canvas(grid, 6)
    assert canvas.shape == (6, 6) and canvas.dtype == np.int64
    assert (canvas[shape[0]:, :] == OUTSIDE).all() and (canvas[:, shape[1]:] == OUTSIDE).all()
    back = from_canvas(canvas)
    assert back.shape == shape and np.array_equal(back, grid)


def test_canvas_with_another_output_size():
    pair = synthetic_tasks(rules=("crop",), side=6, seed=0)[0].train[0]
    assert pair.input.shape == (6, 6) and pair.output.shape == (3, 3)
    assert np.array_equal(from_canvas(to_canvas(pair.output, 6)), pair.output)
    # Reading a prediction: OUTSIDE inside the extent becomes 0; an empty prediction is 1x1.
    canvas = to_canvas(np.array([[1, 2], [3, 4]]), 6)
    canvas[1, 1] = OUTSIDE
    assert np.array_equal(from_canvas(canvas), [[1, 2], [3, 0]])
    assert np.array_equal(from_canvas(np.full((6, 6), OUTSIDE)), [[0]])


def test_too_big_grid_is_a_clear_error(make_learner):
    with pytest.raises(ValueError, match=r"7x3 does not fit the 6x6 canvas \(agent.canvas\)"):
        to_canvas(np.zeros((7, 3), np.int64), 6)
    big = synthetic_tasks(side=8, seed=0)
    learner, sampler = make_learner(big)
    with pytest.raises(ValueError, match="agent.canvas"):
        learner.step(sampler.batch(big[0]))


def test_agent_output_shape(tiny_agent):
    agent = GridAgent(tiny_agent(), prompt_dim=32)
    canvas = torch.as_tensor(np.stack([to_canvas(np.ones(shape, np.int64), 6) for shape in ((2, 3), (6, 6))]))
    logits = agent(canvas, torch.randn(2, 32))
    assert logits.shape == (2, 6, 6, 11) and logits.dtype == torch.float32
    with pytest.raises(ValueError, match="larger than the agent's 6x6"):
        agent(torch.full((1, 7, 7), OUTSIDE), torch.randn(1, 32))


def test_a_smaller_canvas_embeds_every_shared_cell_as_the_full_one(tiny_agent):
    """Each cell's input embedding (class, coordinates, 3x3 neighbourhood, prompt and view) is the
    same on a 4x4 canvas as on the agent's 6x6 one; the logits may differ (the larger canvas adds
    cells to attend to), so only the shapes are compared there."""
    torch.manual_seed(0)
    agent = GridAgent(tiny_agent(), prompt_dim=32).eval()
    grids = [np.arange(6).reshape(2, 3) % 10, np.full((4, 1), 7)]
    prompt, view = torch.randn(2, 32), torch.tensor([0, 5])
    embedded = {}
    with torch.no_grad():
        for side in (6, 4):
            canvas = torch.as_tensor(np.stack([to_canvas(g, side) for g in grids]))
            assert agent(canvas, prompt, view).shape == (2, side, side, 11)
            x = agent._embed(canvas[None], prompt[None], view[None])[0]  # (2, 1+S*S, D)
            embedded[side] = x[:, 1:].reshape(2, side, side, -1)
    torch.testing.assert_close(embedded[4], embedded[6][:, :4, :4], rtol=0, atol=0)


def test_copies_compute_what_each_single_agent_computes(tiny_agent):
    """Copy i of a stacked agent gives copy i's inputs the logits the one-copy agent gives them, and
    a loss on one copy leaves every other copy's gradients at zero."""
    torch.manual_seed(1)
    agent = GridAgent(tiny_agent(passes=2), prompt_dim=8)
    stacked = agent.stacked(3)
    with torch.no_grad():
        for p in stacked.parameters():
            p.add_(0.01 * torch.randn_like(p))  # the copies drift apart, as in adaptation
    canvas = torch.randint(0, 11, (3, 2, 5, 5))
    prompt, view = torch.randn(3, 2, 8), torch.randint(0, 8, (3, 2))
    out = stacked(canvas, prompt, view)
    single = GridAgent(tiny_agent(passes=2), prompt_dim=8)
    with torch.no_grad():
        for (name, mine), theirs in zip(stacked.named_parameters(), single.parameters()):
            if name == "coord_emb":
                theirs.copy_(mine[:, 1:2])
            elif name == "stem":
                theirs.copy_(mine.view(3, -1, *mine.shape[1:])[1])
            else:
                theirs.copy_(mine[1:2])
        torch.testing.assert_close(single(canvas[1], prompt[1], view[1]), out[1].detach(), rtol=1e-4, atol=1e-5)
    out[0].sum().backward()
    for name, p in stacked.named_parameters():
        grad = p.grad.transpose(0, 1) if name == "coord_emb" else p.grad.view(3, -1) if name == "stem" else p.grad
        assert grad[1:].abs().max() == 0, name
