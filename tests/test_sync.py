"""Where a step reads its loss (`Learner.sync`): after the backward pass (the default) or right after the forward pass.
The LCDD and SFT steps give the same losses either way, a non-finite loss stops the step before anything is applied,
and an unknown setting is refused."""
import copy, math
import pytest, torch, transformers
from sft_reverse.bench import lcdd_stepper, sft_stepper
from sft_reverse.carrier import make_carrier, perturbed
from sft_reverse.learner import Learner


def _models():
    cfg = transformers.Qwen3Config(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=8, vocab_size=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    base = transformers.Qwen3ForCausalLM(cfg)
    return base, perturbed(base, 0.05, seed=1)


def _batch():
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clone())


@pytest.mark.parametrize('which', ['lcdd', 'sft'])
def test_sync_forward_gives_the_same_steps(which):
    base, ft = _models()
    losses = {}
    for sync in ('backward', 'forward'):
        step = lcdd_stepper(make_carrier(base, ft), _batch()) if which == 'lcdd' else sft_stepper(copy.deepcopy(ft), _batch())
        step.learn.sync = sync
        losses[sync] = [step() for _ in range(3)]
    assert losses['backward'] == losses['forward'] and losses['forward'][0] != losses['forward'][2]


@pytest.mark.parametrize('sync', ['forward', 'backward'])
@pytest.mark.parametrize('which', ['lcdd', 'sft'])
def test_a_non_finite_loss_stops_the_step_and_leaves_no_gradient(which, sync):
    "A NaN loss stops the step before the update: before the backward pass with sync='forward', after it (the default) with its gradients freed."
    base, ft = _models()
    model = make_carrier(base, ft) if which == 'lcdd' else copy.deepcopy(ft)
    step = (lcdd_stepper if which == 'lcdd' else sft_stepper)(model, _batch())
    step.learn.sync = sync
    with torch.no_grad(): model.lm_head.weight.fill_(float('nan'))   # every logit NaN: the loss is NaN
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with pytest.raises(FloatingPointError, match="nothing of this step was applied"): step()
    assert all(p.grad is None for n, p in model.named_parameters() if n in before)   # none left to join the next step's
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)


def test_unknown_sync_is_refused():
    with pytest.raises(ValueError, match="Unknown sync 'middle'"): Learner(None, total=1, sync='middle')
