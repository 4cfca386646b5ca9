"""The bad-input table (README, "Reliability"): one test per row. Each error must name the cause and the fix,
and nothing on disk may be lost by it. Models are small random ones built here, or the tiny lab (cached)."""
import json
from pathlib import Path

import pytest
import torch
import transformers

from sft_reverse.carrier import random_model, perturbed, make_carrier, save_carrier, load_carrier
from sft_reverse.data import load_rows, custom
from sft_reverse.eraser import SoftTrigger, save_trigger, load_trigger, train_trigger
from sft_reverse.experiment import RunConfig, run, load_model, main
from sft_reverse.lcdd import lcdd
from sft_reverse.sft import sft


def _tok():
    from sft_reverse.tiny import tiny_lab
    return tiny_lab(progress=False)


def test_model_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model folder at .*Pass an existing folder"):
        load_model(str(tmp_path/'no'/'such-model'))


def test_offline_hub_id(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(OSError, match="If you are offline, download it .* or pass a local folder"):
        load_model('sft-reverse/not-a-real-model')


def test_hub_config_that_needs_remote_code(tmp_path):
    rc = tmp_path/'remote'; rc.mkdir()
    (rc/'config.json').write_text(json.dumps(dict(model_type='my_custom_lm', auto_map={'AutoConfig': 'configuration_my.MyConfig'})))
    with pytest.raises(ValueError, match="refused unless you trust it: pass trust_remote_code=True"):
        load_model(str(rc))


@pytest.mark.parametrize('other', [dict(family='llama'), dict(family='qwen3', hidden_size=64, head_dim=16)])
def test_base_and_sft_of_different_families_or_sizes(other):
    base = random_model('qwen3')
    ft = random_model(**other)
    with pytest.raises(ValueError, match="must be a fine-tune of this base|different model sizes"):
        make_carrier(base, ft)


def test_tokenizer_and_model_vocab_mismatch(tmp_path):
    _, tok = _tok()
    small = transformers.AutoModelForCausalLM.from_config(transformers.Qwen3Config(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=16))
    small.save_pretrained(tmp_path/'m'); tok.save_pretrained(tmp_path/'m')
    with pytest.raises(ValueError, match="do not belong together. Load the tokenizer saved with this model"):
        load_model(str(tmp_path/'m'))


def test_empty_dataset(tmp_path):
    (tmp_path/'empty.jsonl').write_text('')
    with pytest.raises(ValueError, match="No rows in"):
        load_rows(str(tmp_path/'empty.jsonl'))


def test_dataset_with_missing_columns(tmp_path):
    (tmp_path/'rows.jsonl').write_text('\n'.join(json.dumps(dict(question=f'q{i}', answer='a')) for i in range(10)))
    with pytest.raises(ValueError, match=r"no column 'prompt' .* Pass prompt_col="):
        custom(str(tmp_path/'rows.jsonl'), n_eval=2)


def test_prompts_longer_than_the_context(tmp_path):
    rows = [dict(prompt=f'word{i} ' * (400 if i == 3 else 5), response='ok') for i in range(30)]
    (tmp_path/'long.jsonl').write_text('\n'.join(json.dumps(r) for r in rows))
    cfg = RunConfig(task='custom', data=dict(src=str(tmp_path/'long.jsonl')), n_eval=5, out_dir=str(tmp_path/'out'))
    with pytest.raises(ValueError, match="positions leave room for .* Drop long prompts"):
        run(cfg, progress=False)
    assert not (tmp_path/'out'/'sft').exists()          # refused before any training


def test_nan_in_the_sft_loss_keeps_the_last_good_checkpoint(tmp_path):
    base, tok = _tok()
    rows = [dict(prompt=f'Name the number {i}.', response=f'{i}') for i in range(64)]
    import copy
    bad = copy.deepcopy(base)
    def poison(step, loss):
        if step == 4:
            with torch.no_grad(): bad.lm_head.weight[0, 0] = float('nan')
    with pytest.raises(FloatingPointError, match="The last good checkpoint is .*step-0000003"):
        sft(bad, tok, rows, out_dir=tmp_path, save_every=3, callback=poison, lr=1e-4, batch_size=8, max_steps=8, progress=False)
    assert (tmp_path/'step-0000003'/'state.json').exists()


def test_inf_in_the_lcdd_loss_stops_the_run(tmp_path):
    base, tok = _tok()
    c = make_carrier(base, perturbed(base))
    with torch.no_grad(): next(iter(c.deltas.values())).delta.fill_(float('inf'))
    rows = [dict(prompt=f'Name the number {i}.', response=f'{i}') for i in range(16)]
    with pytest.raises(FloatingPointError, match="LCDD task loss is (nan|inf) at step 1; stopped.*Lower delta_lr"):
        lcdd(c, tok, rows, max_steps=3, batch_size=8, out_dir=tmp_path, progress=False)


def test_nan_in_the_trigger_loss():
    base, tok = _tok()
    c = make_carrier(base, perturbed(base))
    with torch.no_grad(): next(iter(c.deltas.values())).delta.fill_(float('nan'))
    with pytest.raises(FloatingPointError, match="Trigger loss is nan at step 1; stopped.*Lower lr"):
        train_trigger(c, base, tok, ['Name a town.'] * 4, steps=3, batch_size=4, progress=False)


def _carrier_dir(tmp_path):
    base = random_model('qwen3'); c = make_carrier(base, perturbed(base))
    return base, c, save_carrier(c, tmp_path/'carrier')


def test_corrupted_safetensors_file(tmp_path):
    base, c, d = _carrier_dir(tmp_path)
    raw = bytearray((d/'carrier.safetensors').read_bytes()); raw[-3] ^= 0xFF
    (d/'carrier.safetensors').write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted"):
        load_carrier(base, d)
    trig_dir = save_trigger(SoftTrigger(base.config.hidden_size, L=4), tmp_path/'trig', base)
    (trig_dir/'trigger.safetensors').write_bytes(b'not a tensor file')
    with pytest.raises(ValueError, match="the trigger is corrupted; train or save it again"):
        load_trigger(trig_dir, base)


def test_json_sidecar_for_another_model(tmp_path):
    base, c, d = _carrier_dir(tmp_path)
    with pytest.raises(ValueError, match="was made for a 'qwen3' model but the base is 'llama'; load it onto the base it was crafted from"):
        load_carrier(random_model('llama'), d)
    with pytest.raises(ValueError, match="Dimension mismatch|n_layers=2 but this base has n_layers=3"):
        load_carrier(random_model('qwen3', num_hidden_layers=3), d)


def test_trigger_file_used_with_a_different_model(tmp_path):
    base = random_model('qwen3')
    d = save_trigger(SoftTrigger(base.config.hidden_size, L=4), tmp_path/'trig', base)
    with pytest.raises(ValueError, match="trained for a model with hidden_size=32 .* use the trigger with the model it was trained for"):
        load_trigger(d, random_model('qwen3', hidden_size=64, head_dim=16))


def test_config_with_an_unknown_key_or_out_of_range_value(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['taks'\]; valid keys"):
        RunConfig.from_dict(dict(taks='safety'))
    for bad, msg in ((dict(lcdd=dict(budget_ratio=-1)), "lcdd.budget_ratio must be a number > 0"),
                     (dict(lcdd=dict(lambda_mn=1)), r"unknown lcdd setting\(s\) \['lambda_mn'\]; valid"),
                     (dict(seed=-3), "seed must be an integer >= 0"), (dict(dtype='float8'), "dtype='float8' is not one of"),
                     (dict(trigger=dict(steps=0)), "trigger.steps must be a number > 0")):
        with pytest.raises(ValueError, match=msg): RunConfig(**bad).validate()
    (tmp_path/'c.yaml').write_text('task: safety\nn_train: -5\n')
    assert main(['run', str(tmp_path/'c.yaml')]) == 2          # the command line says so and exits 2


def test_output_dir_that_is_not_writable(tmp_path):
    (tmp_path/'a-file').write_text('keep me')
    with pytest.raises(PermissionError, match="is not writable .* pass out_dir= a folder you can write to"):
        run(RunConfig(out_dir=str(tmp_path/'a-file'/'out')), progress=False)
    assert (tmp_path/'a-file').read_text() == 'keep me'
