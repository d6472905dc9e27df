"""Checkpoints made from a Llama one, for tests that need another model family
or config offline. transformers loads each as it would the real thing.

make_qwen2: the Llama checkpoint's tensors and tokenizer files, plus q/k/v
projection biases (seeded normal, std 0.2: the one tensor family a Qwen2 layer
has beyond Llama's), model_type qwen2 and a RoPE base of 1e6 as Qwen2 ships;
transformers loads it as Qwen2ForCausalLM. tie_embeddings=True drops
lm_head.weight and sets tie_word_embeddings, as the small Qwen2 models (0.5B,
1.5B) ship: the head is then the input embeddings.

make_llama3_rope: the same checkpoint with Llama 3.1's RoPE scaling
(rope_type llama3; factor 8, low 1, high 4, as Llama 3.1 ships them)
and an original context of 32 tokens, so that within a short chunk the
scaling reaches all three of its bands on tiny-llama's frequencies: divided
by the factor (wavelength > 32), blended (8..32), kept (< 8).

for_case: the checkpoint an interop case runs on, by its name's prefix
("qwen2-", "llama3rope-"; otherwise the Llama one itself).

    model_dir = checkpoints.make_qwen2("models/tiny-llama", "/tmp/qwen2")
    model_dir = checkpoints.for_case("qwen2-gptq-4bit", "models/tiny-llama", tmp)
"""
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def make_qwen2(llama_dir, out_dir, tie_embeddings=False):
    """A Qwen2 checkpoint: the Llama one's tensors and tokenizer, plus q/k/v biases."""
    out = Path(out_dir)
    out.mkdir()
    src = Path(llama_dir)
    for f in src.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, out / f.name)
    cfg = json.loads((src / "config.json").read_text())
    tensors = load_file(str(src / "model.safetensors"))
    gen = torch.Generator().manual_seed(7)
    heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    for i in range(cfg["num_hidden_layers"]):
        for proj, rows in (("q", heads * hd), ("k", kv * hd), ("v", kv * hd)):
            bias = torch.randn(rows, generator=gen) * 0.2
            tensors[f"model.layers.{i}.self_attn.{proj}_proj.bias"] = bias.to(torch.float16)
    if tie_embeddings:
        del tensors["lm_head.weight"]
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    for key in ("attention_bias", "mlp_bias", "head_dim", "pretraining_tp"):
        cfg.pop(key, None)
    cfg.update({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "use_sliding_window": False,
                "sliding_window": None, "max_window_layers": cfg["num_hidden_layers"],
                "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
                "tie_word_embeddings": tie_embeddings})
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return str(out)


LLAMA3_ROPE = {"rope_theta": 10000.0, "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


def make_llama3_rope(llama_dir, out_dir):
    """The Llama checkpoint with llama3 RoPE scaling (LLAMA3_ROPE) in its config.json."""
    shutil.copytree(llama_dir, out_dir)
    cfg_path = Path(out_dir) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("rope_theta", None)
    cfg.pop("rope_scaling", None)
    cfg["rope_parameters"] = dict(LLAMA3_ROPE)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return str(out_dir)


# Case-name prefix -> the checkpoint maker.
_MAKERS = {"qwen2-": make_qwen2, "llama3rope-": make_llama3_rope}


def for_case(name, llama_dir, tmp):
    """The checkpoint case `name` runs on: made in tmp for a prefix of _MAKERS, else llama_dir."""
    for prefix, make in _MAKERS.items():
        if name.startswith(prefix):
            return make(llama_dir, f"{tmp}/{name}-checkpoint")
    return llama_dir
